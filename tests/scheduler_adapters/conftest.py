"""Fixtures for adapter tests; the live-Slurm ones come from the ``tests._slurm`` plugin.

They are imported here too so that these tests run even where the root conftest does
not load the plugin; a conftest's fixture simply shadows the plugin's same one.
"""

from tests._slurm import slurm_clusters_file, slurm_tenant

__all__ = ["slurm_clusters_file", "slurm_tenant"]
