"""PSI/J's descriptor of the ``hpc-broker`` executor.

Installed as ``psij-descriptors/hpc_broker.py`` (pyproject maps it there): PSI/J reads
every ``psij-descriptors`` directory on ``sys.path`` when it is imported, and loads the
class from beside that directory. An editable install puts nothing on ``sys.path``:
there, ``broker.client.psij_executor.register()`` does the same.
"""

from packaging.version import Version
from psij.descriptor import Descriptor

__PSI_J_EXECUTORS__ = [
    Descriptor(
        name="hpc-broker",
        nice_name="HPC compute broker",
        version=Version("0.1.0"),
        cls="broker.client.psij_executor.BrokerJobExecutor",
    )
]
