#!/usr/bin/env bash
# Installs the Debian packages the local mail testbed needs (idempotent; ~0.1 s when already done).
# Usage (as root on Debian 12): bash tests/testbed/install.sh
set -euo pipefail
here=$(dirname "$0")

# /etc/postfix stays in Debian's "No configuration" state; the testbed uses its own config dir.
preseed=$(mktemp)
trap 'rm -f "$preseed"' EXIT
cat >"$preseed" <<'SEL'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string probe.test
opendmarc opendmarc/dbconfig-install boolean false
opendmarc opendmarc/dbconfig-upgrade boolean false
SEL

APT_INSTALL_PRESEED=$preseed bash "$here/../tools/apt-install.sh" testbed \
    postfix postfix-pcre \
    dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sieve \
    opendkim opendkim-tools opendmarc postfix-policyd-spf-python \
    dnsmasq-base swaks libnet-ssleay-perl openssl util-linux
