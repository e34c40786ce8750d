#!/usr/bin/env bash
# Installs the Debian packages the local mail testbed needs (idempotent; ~1 s when already done).
# Usage (as root on Debian 12): bash tests/testbed/install.sh
set -euo pipefail

PACKAGES=(
    postfix postfix-pcre
    dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sieve
    opendkim opendkim-tools opendmarc postfix-policyd-spf-python
    dnsmasq-base swaks libnet-ssleay-perl openssl util-linux
)

# Fast path: every package already installed -> nothing to do.
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != installed ]]; then
        missing+=("$pkg")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "testbed install: all ${#PACKAGES[@]} packages present"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "testbed install: missing packages (${missing[*]}); run this script as root" >&2
    exit 1
fi

t0=$(date +%s)
echo "testbed install: installing ${missing[*]}"

# Package postinst scripts would start stock daemons (postfix :25, dovecot 143/993):
# a policy-rc.d that exits 101 forbids that. Create one only if absent, remove it afterwards.
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
# /etc/postfix stays in Debian's "No configuration" state; the testbed uses its own config dir.
debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string probe.test
opendmarc opendmarc/dbconfig-install boolean false
opendmarc opendmarc/dbconfig-upgrade boolean false
SEL

# Package lists may be absent (fresh CI image) or stale: refresh them whenever we install.
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

echo "testbed install: done in $(($(date +%s) - t0)) s"
