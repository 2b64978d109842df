"""Tenants and their API keys, admin operations, per-tenant limits."""
