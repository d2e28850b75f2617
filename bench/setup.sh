#!/usr/bin/env bash
# Installs what bench/run.py needs and does not find; bench/run.py runs it
# when something is missing (`make bench` never needs it run by hand, and
# `make test` never runs it).
#   - SIPp (Debian package sip-tester) and Kamailio 5.6 (package kamailio)
#     from apt; the kamailio package's own service is left stopped and
#     disabled: the harness runs its own instance in the foreground;
#   - the Sippy B2BUA (PyPI sippy) in its own venv, bench/.venv-sippy.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "bench/setup.sh: need root to apt-get install ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now kamailio >/dev/null 2>&1 || true
    fi
fi

venv="$here/.venv-sippy"
if [ ! -x "$venv/bin/b2bua" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "sippy==2.5.0"
fi
