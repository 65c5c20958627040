"""Slurm adapters: the ``slurm-cli``, ``slurmrestd`` and ``pyslurm`` kinds and their parts.

``script`` turns a ``JobSpec`` into sbatch input and neutralises a script's directives
(an allow-list, for every adapter), ``states`` maps Slurm states,
``parse`` reads Slurm's JSON of every version, ``accounting`` drives ``sacctmgr``.
The adapter modules are imported lazily by ``scheduler_adapters.registry``.
"""
