"""Routers: artifacts, jobs, ops (health, readiness, metrics)."""
