"""Unit tests: no root, no services, seconds."""
