"""Permutation specs: tracing a model's graph into axis links and groups, explicit specs, the self-check."""
