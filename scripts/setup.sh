#!/usr/bin/env bash
# Idempotent setup on Debian/Ubuntu as root: distro bcc + tools, a venv that sees
# the distro's bcc module, netsleuth installed into it (with test extras when
# asked) and on PATH as /usr/local/bin/netsleuth.  Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs packages with apt and loads BPF programs)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "setup.sh: this script knows apt (Debian/Ubuntu); for RHEL/openEuler see README.md" >&2
    exit 1
fi

# Needed: bcc's Python module and a venv.  Useful: bpftool (doctor, tests), iproute2
# and nftables (discovery, tests).  The tests compile small C programs (gcc).
needed="python3-bpfcc python3-venv python3-pip iproute2"
useful="bpftool nftables psmisc"
# chromium: the tests open the HTML report in a real (headless) browser.
[ $want_tests = 1 ] && needed="$needed gcc libc6-dev tmux nftables chromium"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing() { for p in "$@"; do installed "$p" || echo "$p"; done; }
# shellcheck disable=SC2086
todo=$(missing $needed $useful)
if [ -n "$todo" ]; then
    apt-get update -qq
    # Ubuntu ships bpftool in linux-tools: an optional package apt does not know is skipped.
    known=""
    for p in $todo; do
        if apt-cache show "$p" >/dev/null 2>&1; then known="$known $p"
        else echo "setup.sh: no package $p here; skipped" >&2; fi
    done
    if [ -n "$known" ]; then
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $known >/dev/null
    fi
fi
# The exporter's tests run a real Prometheus server and promtool (Debian's prometheus).
# Its package starts a daemon on :9090 when installed: a temporary policy-rc.d (where
# none is set) keeps it from starting, and where systemd runs it is disabled too.
if [ $want_tests = 1 ] && ! installed prometheus; then
    [ -n "$todo" ] || apt-get update -qq
    policy=/usr/sbin/policy-rc.d
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true
    else service prometheus stop >/dev/null 2>&1 || true; fi
    needed="$needed prometheus"
fi
# shellcheck disable=SC2086
still=$(missing $needed)
if [ -n "$still" ]; then
    echo "setup.sh: could not install: $still" >&2
    exit 1
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

# `netsleuth` on PATH, as the commands the wizard and its reports print expect;
# an unrelated file of that name is left alone.
link=/usr/local/bin/netsleuth
if [ ! -e "$link" ] || [ -L "$link" ]; then
    ln -sfn "$PWD/.venv/bin/netsleuth" "$link"
else
    echo "setup.sh: $link exists and is not ours; use $PWD/.venv/bin/netsleuth" >&2
fi
