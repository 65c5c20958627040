"""The operator dashboard (server-rendered)."""
