"""relayprobe presentation for Nagios/Icinga: the check_m365_relay plugin and object definitions."""
