"""relayprobe acquisition: send a tagged probe through a relay, confirm it over IMAP, read the verdict."""

__version__ = "0.1.0"
