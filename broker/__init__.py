"""HPC compute broker: PFlop·h quotas, Slurm clusters, node-speed billing."""

__version__ = "0.1.0"
