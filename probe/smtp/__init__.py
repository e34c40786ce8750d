"""SMTP submission: the probe mail through a relay, failures and replies classified."""
