#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian 12 machine (as root) and runs it.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

t0=$(date +%s)
# System packages (mail system, monitoring tools). Each installer is idempotent and fast when done.
for installer in tests/testbed/install.sh tests/tools/install-*.sh; do
    if [[ -f $installer ]]; then
        bash "$installer"
    fi
done

# Python environment: the project and its test extras in a venv of its own.
if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
echo "setup: $(( $(date +%s) - t0 )) s"

.venv/bin/ruff check .
.venv/bin/ruff format --check .

# Test traffic stays on loopback, DNS included: pytest and everything it starts resolve through
# the testbed's dnsmasq (127.0.0.153, no upstream), never this machine's resolver. A probe whose
# SPF/DKIM/DMARC verdict fails looks up its DNS cause with the system resolver unless its config
# names a server (docs/testing.md, "Loopback only").
resolv=$(mktemp)
echo "nameserver 127.0.0.153" > "$resolv"
set +e
unshare --mount -- sh -c 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' \
    sh "$resolv" .venv/bin/python -m pytest "$@"
rc=$?
set -e
rm -f "$resolv"
# pytest exits 5 when a selection ran no tests: that is not a failure of the code under test.
if [[ $rc -eq 5 ]]; then
    echo "pytest: no tests collected for this selection"
    rc=0
fi
exit $rc
