"""Adapter tests use the live-Slurm fixtures of the ``tests._slurm`` plugin (root conftest)."""
