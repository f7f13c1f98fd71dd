#!/usr/bin/env bash
# Build, here (with PyPI), the offline bundle that tests/gpu/check.sh needs on a GPU machine
# without network:
#   tritonserver.tar.xz  the wheel's tritonserver/bin, backends and the Python $PYVER stub, with
#                        nvidia_pytriton.libs, in the wheel's own layout (their RPATHs keep working)
#   *.whl                cp${PYVER/./} wheels: pip itself, every model's requirements.txt
#                        (numpy<2, pypdf), and pyinfra with its dependencies
#   pyinfra.txt          the pyinfra pin from pyproject.toml
#   SHA256SUMS           checked first by check.sh
# Usage: bash tests/gpu/pack.sh [OUT_DIR]    (default .whl/gpu-check; PYVER default 3.12)
# Needs nvidia-pytriton installed in .venv (the test extra).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:-$repo/.whl/gpu-check}")
pyver=${PYVER:-3.12}
python=${PYTHON:-$repo/.venv/bin/python}

mkdir -p "$out"
rm -f "$out"/*.whl "$out"/tritonserver.tar.xz "$out"/SHA256SUMS

root=$(cd "$repo" && "$python" -c \
  'from oceanid.triton_runtime import installed_distribution; print(installed_distribution().root)')
stubs="pytriton/tritonserver/python_backend_stubs/$pyver"
[ -f "$root/$stubs/triton_python_backend_stub" ] || { echo "no Python $pyver stub in $root" >&2; exit 1; }
# libpython3.13 inside nvidia_pytriton.libs serves only the 3.13 stub.
exclude=()
[ "$pyver" = "3.13" ] || exclude=(--exclude='nvidia_pytriton.libs/libpython3-*')
XZ_OPT=-T0 tar -C "$root" -cJf "$out/tritonserver.tar.xz" --exclude=__pycache__ "${exclude[@]}" \
  pytriton/tritonserver/bin pytriton/tritonserver/backends "$stubs" nvidia_pytriton.libs

grep -o '"pyinfra==[^"]*"' "$repo/pyproject.toml" | tr -d '"' >"$out/pyinfra.txt"
requirements=()
for file in "$repo"/triton-models/*/requirements.txt; do requirements+=(-r "$file"); done
"$python" -m pip download --quiet --only-binary=:all: --python-version "$pyver" --dest "$out" \
  pip "${requirements[@]}" -r "$out/pyinfra.txt"

(cd "$out" && sha256sum tritonserver.tar.xz pyinfra.txt ./*.whl >SHA256SUMS)
du -sh "$out"
ls "$out"
