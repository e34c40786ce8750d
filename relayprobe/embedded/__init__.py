"""Embedded, pure-Python mail system (submission, MX, SPF/DKIM/DMARC, IMAP) behind `relayprobe demo`."""

from .system import EmbeddedMailSystem

__all__ = ["EmbeddedMailSystem"]
