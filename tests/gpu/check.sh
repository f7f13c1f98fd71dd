#!/usr/bin/env bash
# GPU check (design.md §5, layer 5): on a real NVIDIA machine, with no network,
#   (a) the pyinfra GPU fact through the @local connector against the real nvidia-smi;
#   (b) Triton from the nvidia-pytriton wheel serving docling_granite_python with KIND_GPU on GPU 0,
#       the repository rendered by oceanid.triton_repo exactly as the deploy renders it; one PDF,
#       then a batch of three in one request ([3, 1]), one of them unreadable.
# Prints PASS/FAIL lines and exits non-zero on any FAIL. Takes about a minute.
#
# Usage: bash tests/gpu/check.sh BUNDLE_DIR     (BUNDLE_DIR built here by tests/gpu/pack.sh)
# Environment: PYTHON (default /usr/bin/python3; its X.Y must match the bundle's stub),
#   TORCH_VENV (default /opt/torch/.venv; reached from the model env through a .pth when present),
#   KIND (default KIND_GPU; KIND_CPU rehearses the same steps on a machine without a GPU),
#   WORK (default: a fresh folder under /tmp, kept for reading the logs afterwards),
#   TRITON_IMAGE (an image on this machine: also run Triton the container runtime's way).
set -u -o pipefail

GPU_FACT="facts.gpu.GpuDevices"  # the pyinfra fact class that reads nvidia-smi

bundle=$(realpath "${1:?usage: check.sh BUNDLE_DIR (made by tests/gpu/pack.sh)}")
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
torch_venv=${TORCH_VENV:-/opt/torch/.venv}
kind=${KIND:-KIND_GPU}
work=${WORK:-$(mktemp -d /tmp/oceanid-gpu-check.XXXXXX)}
mkdir -p "$work"
failures=0

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
run() {  # run "what" cmd...: PASS/FAIL on its status, output kept in $work/<n>.log
  local what=$1 log
  shift
  log="$work/step-$((++step)).log"
  if "$@" >"$log" 2>&1; then pass "$what"; else fail "$what (see $log)"; tail -n 20 "$log"; return 1; fi
}
step=0

echo "INFO: work folder $work; bundle $bundle; python $($python -V 2>&1); kind $kind"
nvidia-smi -L || echo "INFO: nvidia-smi -L failed"

run "bundle checksums" bash -c "cd '$bundle' && sha256sum --check --quiet SHA256SUMS"
pip_wheel=$(ls "$bundle"/pip-*.whl | head -n 1)

# Two venvs from the system Python, so the stub (linked to its libpython) and the standard
# library agree: one for Triton's models (like /opt/triton on calypso), one for pyinfra.
# --without-pip works where Ubuntu's python3-venv (ensurepip) is not installed; pip itself runs
# from its wheel.
install() {  # install VENV pip-args...: offline, from the bundle only
  local venv=$1
  shift
  "$venv/bin/python" "$pip_wheel/pip" install --quiet --no-index --find-links "$bundle" "$@"
}
model_env="$work/model-env"
check_env="$work/check-env"
requirements=()
for file in "$repo"/triton-models/*/requirements.txt; do requirements+=(-r "$file"); done
run "model venv from $python" "$python" -m venv --without-pip "$model_env" &&
  run "models' requirements into the model venv" install "$model_env" "${requirements[@]}"
run "pyinfra venv from $python" "$python" -m venv --without-pip "$check_env" &&
  run "$(cat "$bundle/pyinfra.txt") into the pyinfra venv" install "$check_env" -r "$bundle/pyinfra.txt"

# (a) the GPU fact, through pyinfra's @local connector, from the repository root.
if (cd "$repo" && "$check_env/bin/pyinfra" --json @local fact "$GPU_FACT" >"$work/gpu-fact.json" 2>"$work/gpu-fact.err"); then
  PYTHONPATH="$repo" "$check_env/bin/python" -m tests.gpu.triton_check facts "$work/gpu-fact.json" ||
    failures=$((failures + 1))
else
  fail "pyinfra @local fact $GPU_FACT (see $work/gpu-fact.err)"
  tail -n 20 "$work/gpu-fact.err"
fi

# PyTorch stays in its own venv; the model env reaches it through a .pth, as the Granite path
# would on calypso. Our site-packages come first, so numpy<2 still wins.
if [ -x "$torch_venv/bin/python" ]; then
  site=$("$model_env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$torch_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$site/torch-venv.pth"
  run "PyTorch sees CUDA from the model env (via $site/torch-venv.pth)" \
    "$model_env/bin/python" -c 'import numpy, torch; print(numpy.__version__, torch.__version__); assert torch.cuda.is_available()'
else
  echo "INFO: no $torch_venv; PyTorch not checked"
fi

# (b) Triton from the bundle, on GPU 0.
mkdir -p "$work/triton"
# Python's tarfile reads .xz itself, so xz-utils need not be installed.
if run "unpack tritonserver.tar.xz" "$python" -c \
  'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
  "$bundle/tritonserver.tar.xz" "$work/triton"; then
  PYTHONPATH="$repo" "$model_env/bin/python" -m tests.gpu.triton_check triton "$work" \
    --python "$model_env/bin/python3" --kind "$kind" || failures=$((failures + 1))
fi

# (c) the container runtime, where Docker has NVIDIA's runtime and TRITON_IMAGE names an image
#     already on this machine (it reaches no registry): the deploy's way, on the last GPU.
if [ -n "${TRITON_IMAGE:-}" ]; then
  PYTHONPATH="$repo" "$check_env/bin/python" -m tests.gpu.container_check "$work" \
    --image "$TRITON_IMAGE" --bundle "$bundle" || failures=$((failures + 1))
else
  echo "INFO: container variant not run (set TRITON_IMAGE to an image on this machine)"
fi

if [ "$failures" -eq 0 ]; then
  echo "GPU CHECK: PASS"
else
  echo "GPU CHECK: FAIL ($failures failed step(s); logs in $work)"
fi
[ "$failures" -eq 0 ]
