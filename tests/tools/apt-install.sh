#!/usr/bin/env bash
# Shared by the install scripts: apt-get install the named Debian packages that are missing,
# without letting their postinst scripts start any service. Idempotent; ~0.1 s when all present.
# Usage (as root on Debian 12): bash tests/tools/apt-install.sh LABEL PACKAGE...
# An optional debconf preseed is read from $APT_INSTALL_PRESEED (a file) before installing.
set -euo pipefail

label=$1
shift
missing=()
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != installed ]]; then
        missing+=("$pkg")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$label install: all $# packages present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "$label install: missing packages (${missing[*]}); run this script as root" >&2
    exit 1
fi

t0=$(date +%s)
echo "$label install: installing ${missing[*]}"
# Postinst scripts would start stock daemons (postfix :25, dovecot, icinga2, nagios4, prometheus
# :9090): a policy-rc.d that exits 101 forbids that. Create one only if absent; remove only ours.
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
if [[ -n ${APT_INSTALL_PRESEED:-} ]]; then
    debconf-set-selections <"$APT_INSTALL_PRESEED"
fi
# Package lists may be absent (fresh CI image) or stale: refresh them whenever we install.
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "$label install: done in $(($(date +%s) - t0)) s"
