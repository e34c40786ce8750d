"""relayprobe presentation for Prometheus: metrics collector and the HTTP surface."""
