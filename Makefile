# Day-to-day shortcuts; `make` alone (or `make help`) lists them, from each target's `##` line.
# Deploy targets take INVENTORY=, LIMIT= (pyinfra --limit), YES=1 (pyinfra -y: no "Press enter"
# prompt, for a timer or CI) and ARGS= (more pyinfra options). Never -y on a dry run: it skips
# pyinfra's change detection, which is all a dry run shows.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
PYINFRA := $(VENV)/bin/pyinfra
INVENTORY ?= inventory.py
LAB_INVENTORY := inventories/lab.py
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# what every pyinfra run of a deploy target gets: LIMIT, then ARGS as given
RUN_ARGS = $(if $(LIMIT),--limit '$(LIMIT)') $(ARGS)
YES_ARG = $(if $(YES),-y)
# what the lab and the tests need on this machine (sshd: the SSH tunnel test); the keyring
# lets mmdebstrap verify Debian on Ubuntu too; postgresql: the Label Studio contract test;
# nftables: the k3s firewall's rules checked and loaded in the tests' own namespaces
LAB_APT := systemd-container mmdebstrap tinyproxy-bin openssh-client openssh-server iproute2 debian-archive-keyring \
           postgresql nftables

.PHONY: help venv venv-test lab-deps check deploy deploy-simple deploy-full diff drift gpu smoke status verify \
        tunnel tunnel-close kubeconfig lab lab-down lab-status lab-diff lab-check test test-unit test-lab lint \
        bench bench-scale bench-predict clean backup backups restore restore-drill tunnels bootstrap adopt-plan

help:  ## this list (the default goal)
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z0-9-]*:[^=]*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP)  ## .venv with what deploying needs (pyinfra, the SDKs); no test extras
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(STAMP)

venv-test: $(TEST_STAMP)  ## .venv plus the test extras (pytest, ruff, import-linter, the Triton wheel, moto): for tests, lint, lab
$(TEST_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP) $(TEST_STAMP)

lab-deps:  ## apt packages the lab needs on this machine (Debian/Ubuntu, as root)
	@dpkg -s $(LAB_APT) >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	   $(LAB_APT) >/dev/null)

check: venv  ## validate settings and secrets; touches no host
	$(PY) -m oceanid.preflight $(INVENTORY)

deploy: check  ## the whole site as group_data says [LIMIT= YES=1 ARGS=]
	$(PYINFRA) $(YES_ARG) $(INVENTORY) deploys/site.py $(RUN_ARGS)

deploy-simple: check  ## the minimal, non-disruptive deploy: provisioning flags off for this run [LIMIT= YES=1 ARGS=]
	$(PYINFRA) $(YES_ARG) $(INVENTORY) deploys/site.py --data enable_node_provisioning=False \
	  --data enable_control_plane_lb=False $(RUN_ARGS)

deploy-full: check  ## the full deploy: k3s provisioning and the API endpoint on for this run, nothing edited [LIMIT= YES=1 ARGS=]
	$(PYINFRA) $(YES_ARG) $(INVENTORY) deploys/site.py --data enable_node_provisioning=True \
	  --data enable_control_plane_lb=True $(RUN_ARGS)

diff: check  ## what a deploy would change, with file diffs; changes nothing (never -y) [LIMIT= ARGS=]
	$(PYINFRA) $(INVENTORY) deploys/site.py --dry --diff $(RUN_ARGS)

bootstrap: venv  ## the deploy user (admin_user, admin_ssh_keys, sudo) on a fresh host, logged in once as root: HOST=calypso [LOGIN=<user with a sudo password>] [YES=1 ARGS=]
	@test -n '$(HOST)' || { echo 'make bootstrap: name the host: HOST=<inventory name>' >&2; exit 3; }
	$(PYINFRA) $(YES_ARG) $(INVENTORY) deploys/bootstrap.py --limit '$(HOST)' \
	  $(if $(filter-out root,$(or $(LOGIN),root)),--user '$(LOGIN)' --sudo --use-sudo-password,--data ssh_user=root --data _sudo=False) $(ARGS)

adopt-plan: venv  ## read-only: what the first deploy would adopt, replace or refuse; PULUMI_EXPORT=stack.json adds the `pulumi state delete` lines; HOSTS=1 reads k3s over SSH
	$(PY) -m deploys.adopt $(INVENTORY) $(if $(PULUMI_EXPORT),--pulumi-export '$(PULUMI_EXPORT)') $(if $(HOSTS),--hosts)

tunnels: venv  ## create each tunnel the settings name that Cloudflare lacks; print the `esc env set` lines (SHOW=<credential key>: that token alone)
	$(PY) -m oceanid.tunnels $(INVENTORY) $(if $(SHOW),--show '$(SHOW)')

gpu: check  ## one GPU host: make gpu HOST=calypso [YES=1 ARGS=]
	$(PYINFRA) $(YES_ARG) $(INVENTORY) deploys/gpu.py --limit '$(or $(LIMIT),$(HOST),calypso)' $(ARGS)

verify: venv  ## testinfra checks: each role's module on its group's hosts, from the inventory
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/hosts --inventory=$(INVENTORY)

lab: venv-test lab-deps  ## boot the lab and deploy the whole site into it
	$(PY) -m lab up

lab-down: venv-test  ## stop the lab and remove everything it made
	$(PY) -m lab down

lab-status: venv-test  ## what the lab runs
	$(PY) -m lab status

lab-diff: venv-test  ## `make diff` against the lab (never -y: it skips change detection)
	$(PYINFRA) $(LAB_INVENTORY) deploys/site.py --dry --diff $(RUN_ARGS)

lab-check: venv-test  ## `make check` for the lab's inventory, settings and secrets
	$(PY) -m oceanid.preflight $(LAB_INVENTORY)

lint: venv-test  ## ruff check, ruff format --check, and the layer contract (lint-imports)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

test-unit: venv-test lab-deps  ## unit, stand-in and contract tests (no lab)
	$(VENV)/bin/pytest -q -m 'not lab' tests/unit tests/standins tests/contract

test-lab: venv-test lab-deps  ## the lab tests (root: boots the lab)
	$(VENV)/bin/pytest -q -m lab tests/lab

test: venv-test lab-deps  ## everything CI runs: lint, unit, contract and lab tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(VENV)/bin/pytest -q tests/unit tests/standins tests/contract tests/lab

bench: venv-test lab-deps  ## boots the lab; no-op, dry run, bare exec, reference; LATENCY=50ms adds WAN delay
	$(PY) -m lab.bench --latency $(or $(LATENCY),0)

bench-scale: venv-test lab-deps  ## N (default 8) extra GPU hosts: first and no-op converge, 1 against N
	$(PY) -m lab.bench_scale --hosts $(or $(N),8)

bench-predict: venv-test  ## N PDFs (16) of PAGES pages (10, and 1) via the ML-backend adapter and straight to CPU Triton; BATCH (8)
	$(PY) -m tests.contract.bench_predict --n $(or $(N),16) --batch $(or $(BATCH),8) --pages $(or $(PAGES),10)

clean: lab-down  ## the lab down, and .lab (its caches) removed
	rm -rf .lab

tunnel:  ## the k3s API on 127.0.0.1:16443 through SSH to tethys:6443 (HOST) of INVENTORY, in the background
	INVENTORY='$(INVENTORY)' PYTHON=$(PY) scripts/k3s-ssh-tunnel.sh $(or $(HOST),tethys)

tunnel-close:  ## close that tunnel through its SSH control socket
	scripts/k3s-ssh-tunnel.sh --close $(or $(HOST),tethys)

kubeconfig: venv  ## the server's (HOST, tethys) kubeconfig of INVENTORY for the tunnel: cluster/kubeconfig.yaml (0600)
	$(PY) -m deploys.k3s.kubeconfig --inventory '$(INVENTORY)' $(or $(HOST),tethys)

smoke: venv  ## the public URLs and the tunnels, from outside: exit 0 pass, 1 a check failed, 3 bad input; JSON=1 for JSON lines
	$(PY) -m oceanid.smoke $(INVENTORY) $(if $(JSON),--json)

status: venv  ## one table per host from its facts (GPU, connector, Triton, k3s); JSON=1 for --json
	$(PY) -m oceanid.status $(INVENTORY) $(if $(JSON),--json)

drift: venv  ## the dry run as a check: exit 0 no drift, 2 drift (what and where), 1 error; JSON=1 for JSON lines
	$(PY) -m oceanid.drift $(INVENTORY) $(if $(JSON),--json)

backup: venv  ## Label Studio's database and media to the object store now, on the first k3s server
	$(PY) -m deploys.cluster_apps.backup_commands --inventory '$(INVENTORY)' backup

backups: venv  ## the backups the object store holds, newest first (read here with boto3)
	$(PY) -m deploys.cluster_apps.backup_commands --inventory '$(INVENTORY)' list

restore: venv  ## make restore BACKUP=<name> [YES=1]: verified, then Label Studio scaled to 0, restored, back to 1
	$(PY) -m deploys.cluster_apps.backup_commands --inventory '$(INVENTORY)' restore '$(BACKUP)' $(if $(YES),--yes)

restore-drill: venv-test lab-deps  ## back up, lose and restore real Label Studio + PostgreSQL data (moto S3); prints the figures
	$(PY) -m tests.contract.backup_drill
