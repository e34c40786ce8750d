"""Control code of the relayprobe mail testbed (used by tests/testbed/tb)."""
