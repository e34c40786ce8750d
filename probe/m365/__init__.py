"""Microsoft 365: OAuth token providers (app-only and delegated) and Microsoft's status codes."""
