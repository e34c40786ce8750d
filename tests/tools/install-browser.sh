#!/usr/bin/env bash
# Headless Chromium for the status-page rendering test (Debian package; no browser download).
set -euo pipefail
bash "$(dirname "$0")/apt-install.sh" browser chromium
