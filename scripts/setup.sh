#!/usr/bin/env bash
# Idempotent setup on Debian/Ubuntu as root: distro bcc + tools, a venv that sees
# the distro's bcc module, and netsleuth installed into it (with test extras when
# asked).  Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs packages with apt and loads BPF programs)" >&2
    exit 1
fi

pkgs="python3-bpfcc python3-venv python3-pip bpftool iproute2 nftables psmisc"
[ $want_tests = 1 ] && pkgs="$pkgs tmux"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# tracefs is where tracepoint formats and drop-reason names live.
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

# bcc's Python module is the distro's: the venv must be made from the system
# Python, with its site-packages visible.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
extra=""
[ $want_tests = 1 ] && extra="[test]"
stamp=".venv/.installed$extra"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extra"
    touch "$stamp"
fi
