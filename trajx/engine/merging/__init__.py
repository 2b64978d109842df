"""Averaging checkpoints along a run and aligning (permuting) one model onto another."""
