"""Posture test helpers: a private dnsmasq with its own zone data and a loopback MTA-STS server."""
