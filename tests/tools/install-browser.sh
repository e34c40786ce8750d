#!/usr/bin/env bash
# Headless Chromium for the status-page rendering test (Debian package; no browser download).
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
