#!/usr/bin/env bash
# Installs the monitoring cores the Nagios plugin tests validate against (idempotent; fast when done).
# Usage (as root on Debian 12): bash tests/tools/install-monitoring.sh
set -euo pipefail

# icinga2: `icinga2 daemon -C` and a real core run; nagios4-core: `nagios4 -v` and a real core run;
# NRPE server/plugin: the shipped NRPE snippet served and queried over loopback.
PACKAGES=(icinga2 nagios4-core nagios-nrpe-server nagios-nrpe-plugin)

# Fast path: every package already installed -> nothing to do.
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != installed ]]; then
        missing+=("$pkg")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "monitoring install: all ${#PACKAGES[@]} packages present"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "monitoring install: missing packages (${missing[*]}); run this script as root" >&2
    exit 1
fi

t0=$(date +%s)
echo "monitoring install: installing ${missing[*]}"

# The postinst scripts would start the stock icinga2/nagios4/nrpe daemons: a policy-rc.d that exits
# 101 forbids that (tests start their own, on scratch configs). Create one only if absent.
created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
cleanup() {
    if [[ $created_policy -eq 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
# Package lists may be absent (fresh CI image) or stale: refresh once, retry install after update.
if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

echo "monitoring install: done in $(($(date +%s) - t0)) s"
