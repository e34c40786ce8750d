"""A local stand-in for the Microsoft Graph calls relayprobe makes (tests only)."""
