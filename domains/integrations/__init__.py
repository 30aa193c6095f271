"""Clients for outside services share one resilience policy (ARCHITECTURE.md, decision 6)."""
