"""OAuth stand-in for tests: a local Entra-like authority and a Dovecot + Postfix pair speaking XOAUTH2."""
