# Day-to-day shortcuts. Every target but `venv` and `lab-deps` uses .venv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYINFRA := $(VENV)/bin/pyinfra
INVENTORY ?= inventory.py
LAB_INVENTORY := inventories/lab.py
STAMP := $(VENV)/.installed
# what the lab and the tests need on this machine (sshd: the SSH tunnel test); the keyring
# lets mmdebstrap verify Debian on Ubuntu too; postgresql: the Label Studio contract test
LAB_APT := systemd-container mmdebstrap tinyproxy-bin openssh-client openssh-server iproute2 debian-archive-keyring \
           postgresql

.PHONY: venv lab-deps check deploy deploy-simple diff drift gpu smoke status verify tunnel tunnel-close \
        kubeconfig lab lab-down lab-status lab-diff lab-check test test-unit test-lab lint bench bench-scale \
        clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

lab-deps:  ## apt packages the lab needs on this machine (Debian/Ubuntu, as root)
	@dpkg -s $(LAB_APT) >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	   $(LAB_APT) >/dev/null)

check: venv  ## validate settings and secrets; touches no host
	$(PY) -m oceanid.preflight $(INVENTORY)

deploy: check  ## the whole site
	$(PYINFRA) $(INVENTORY) deploys/site.py

deploy-simple: check  ## the minimal, non-disruptive deploy (provisioning flags off)
	$(PYINFRA) $(INVENTORY) deploys/site.py --data enable_node_provisioning=False \
	  --data enable_control_plane_lb=False

diff: check  ## what a deploy would change, with file diffs; changes nothing
	$(PYINFRA) $(INVENTORY) deploys/site.py --dry --diff

gpu: check  ## one GPU host: make gpu HOST=calypso
	$(PYINFRA) $(INVENTORY) deploys/gpu.py --limit $(or $(HOST),calypso)

verify: venv  ## testinfra checks: each role's module on its group's hosts, from the inventory
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/hosts --inventory=$(INVENTORY)

lab: venv lab-deps  ## boot the lab and deploy the whole site into it
	$(PY) -m lab up

lab-down: venv
	$(PY) -m lab down

lab-status: venv
	$(PY) -m lab status

lab-diff: venv
	$(PYINFRA) $(LAB_INVENTORY) deploys/site.py --dry --diff  # no -y: it skips change detection

lab-check: venv  ## `make check` for the lab's inventory, settings and secrets
	$(PY) -m oceanid.preflight $(LAB_INVENTORY)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-unit: venv lab-deps
	$(VENV)/bin/pytest -q -m 'not lab' tests/unit tests/standins tests/contract

test-lab: venv lab-deps
	$(VENV)/bin/pytest -q -m lab tests/lab

test: venv lab-deps  ## everything CI runs: lint, unit, contract and lab tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q tests/unit tests/standins tests/contract tests/lab

bench: venv lab-deps  ## boots the lab; no-op, dry run, bare exec, reference; LATENCY=50ms adds WAN delay
	$(PY) -m lab.bench --latency $(or $(LATENCY),0)

bench-scale: venv lab-deps  ## N (default 8) extra GPU hosts: first and no-op converge, 1 against N
	$(PY) -m lab.bench_scale --hosts $(or $(N),8)

clean: lab-down
	rm -rf .lab

tunnel:  ## the k3s API on 127.0.0.1:16443 through SSH to tethys:6443, in the background
	scripts/k3s-ssh-tunnel.sh $(or $(HOST),tethys)

tunnel-close:  ## close that tunnel through its SSH control socket
	scripts/k3s-ssh-tunnel.sh --close $(or $(HOST),tethys)

kubeconfig: venv  ## the server's kubeconfig for the tunnel: cluster/kubeconfig.yaml (0600)
	$(PY) -m deploys.k3s.kubeconfig $(or $(HOST),tethys)

smoke: venv  ## the public URLs and the tunnels, from outside; a failed check fails the command
	$(PY) -m oceanid.smoke $(INVENTORY)

status: venv  ## one table per host from its facts (GPU, connector, Triton, k3s); JSON=1 for --json
	$(PY) -m oceanid.status $(INVENTORY) $(if $(JSON),--json)

drift: venv  ## the dry run as a check: exit 0 no drift, 2 drift (what and where), 1 error
	$(PY) -m oceanid.drift $(INVENTORY)
