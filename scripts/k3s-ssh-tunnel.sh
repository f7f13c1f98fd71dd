#!/usr/bin/env bash
# The k3s API on this machine: 127.0.0.1:16443 -> HOST's 127.0.0.1:6443, through SSH.
#
#   scripts/k3s-ssh-tunnel.sh [HOST]           open it in the background (default HOST: tethys)
#   scripts/k3s-ssh-tunnel.sh --close [HOST]   close it
#   scripts/k3s-ssh-tunnel.sh --check [HOST]   exit 0 when it is open
#
# One SSH master per host and local port, with a control socket: a second open finds it through
# the socket and says so; --close asks that master to exit through the same socket, so no
# process is ever looked up by name or pattern. The API server's certificate names 127.0.0.1
# (tls-san), so `make kubeconfig`'s https://127.0.0.1:16443 verifies through the tunnel.
#
# Environment: SSH (the ssh command and any options, default `ssh`), LOCAL_PORT (16443),
# REMOTE_PORT (6443), CONTROL_DIR (where the socket lives, default ~/.ssh), INVENTORY: reach HOST
# as pyinfra does with that inventory (`make tunnel INVENTORY=inventories/lab.py`): its
# ssh_hostname, user, port, key and SSH config, resolved by `python -m oceanid.sshtarget`
# (PYTHON, default the repository's .venv/bin/python); without it HOST is given to ssh as is.
set -euo pipefail

action=open
case "${1:-}" in
--close) action=close; shift ;;
--check) action=check; shift ;;
-*) echo "usage: $0 [--close|--check] [HOST]" >&2; exit 2 ;;
esac
host="${1:-tethys}"
local_port="${LOCAL_PORT:-16443}"
remote_port="${REMOTE_PORT:-6443}"
control_dir="${CONTROL_DIR:-$HOME/.ssh}"
read -r -a ssh <<<"${SSH:-ssh}"

for port in "$local_port" "$remote_port"; do
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        echo "k3s tunnel: port '$port' is not a TCP port; set LOCAL_PORT/REMOTE_PORT to 1-65535" >&2
        exit 2
    fi
done
if ! [[ "$host" =~ ^[A-Za-z0-9_.@-]+$ ]]; then
    echo "k3s tunnel: '$host' is not an SSH host name" >&2
    exit 2
fi

# OpenSSH's options and destination for HOST: the inventory's, shell-quoted by sshtarget
# (shlex.join), else HOST itself. Only opening needs them: --check and --close talk to the master
# through its socket, so a tunnel closes even once the inventory no longer loads (the lab down).
target=("$host")
if [[ "$action" == open && -n "${INVENTORY:-}" ]]; then
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    [[ "$INVENTORY" == /* ]] || INVENTORY="$PWD/$INVENTORY"  # given from here, read from $repo
    resolved="$(cd "$repo" && "${PYTHON:-$repo/.venv/bin/python}" -m oceanid.sshtarget \
        "$INVENTORY" "$host")" || exit 2
    eval "target=($resolved)"
fi

mkdir -p -m 0700 "$control_dir"
socket="$control_dir/oceanid-k3s-$host-$local_port.sock"

is_open() {
    "${ssh[@]}" -S "$socket" -O check "$host" >/dev/null 2>&1
}

case "$action" in
check)
    is_open
    ;;
close)
    if ! is_open; then
        echo "k3s tunnel to $host (127.0.0.1:$local_port) is not open"
        rm -f "$socket"
        exit 0
    fi
    "${ssh[@]}" -S "$socket" -O exit "$host" 2>/dev/null
    echo "k3s tunnel to $host (127.0.0.1:$local_port) closed"
    ;;
open)
    if is_open; then
        echo "k3s tunnel to $host is already open: https://127.0.0.1:$local_port"
        exit 0
    fi
    # A socket left by a master that died would make ssh run without one: an unclosable tunnel.
    rm -f "$socket"
    if ! "${ssh[@]}" -f -N -M -S "$socket" \
        -o ExitOnForwardFailure=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=3 \
        -L "127.0.0.1:$local_port:127.0.0.1:$remote_port" "${target[@]}"; then
        echo "k3s tunnel to $host failed: is 127.0.0.1:$local_port already in use here, or" \
            "is $host unreachable over SSH?" >&2
        exit 1
    fi
    echo "k3s tunnel to $host open: https://127.0.0.1:$local_port (make tunnel-close to close)"
    ;;
esac
