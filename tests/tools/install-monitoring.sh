#!/usr/bin/env bash
# Installs the monitoring cores the Nagios plugin tests validate against (idempotent; fast when done).
# Usage (as root on Debian 12): bash tests/tools/install-monitoring.sh
set -euo pipefail

# icinga2: `icinga2 daemon -C` and a real core run; nagios4-core: `nagios4 -v` and a real core run;
# NRPE server/plugin: the shipped NRPE snippet served and queried over loopback.
bash "$(dirname "$0")/apt-install.sh" monitoring \
    icinga2 nagios4-core nagios-nrpe-server nagios-nrpe-plugin
