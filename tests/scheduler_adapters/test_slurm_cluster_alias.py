"""A broker cluster reaching a Slurm cluster of another name (``gamma-cli`` -> gamma),
with its tools in ``bin_dir``: accounting and the REST adapter's CLI fallback follow."""

from __future__ import annotations

from pathlib import Path

from scheduler_adapters import create_accounting
from scheduler_adapters.slurm.rest import SlurmRestAdapter


def test_accounting_names_the_slurm_cluster_and_its_tools() -> None:
    options = {"slurm_conf": "/etc/g.conf", "bin_dir": "/opt/s/bin", "slurm_cluster": "gamma"}
    acct = create_accounting("slurm-cli", "gamma-cli", options)
    assert acct is not None and acct.cluster == "gamma" and acct.bin_dir == "/opt/s/bin"
    plain = create_accounting("slurm-cli", "alpha", {"slurm_conf": "/etc/a.conf"})
    assert plain is not None and plain.cluster == "alpha" and plain.bin_dir is None


def test_rest_cli_fallback_uses_bin_dir(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(b"k" * 32)
    rest = SlurmRestAdapter(
        "gamma",
        url="http://rest.test",
        jwt_key_file=str(key),
        slurm_conf="/etc/g.conf",
        bin_dir="/opt/s/bin",
    )
    cli = rest._cli()
    assert cli.bin_dir == "/opt/s/bin" and cli.slurm_conf == "/etc/g.conf"
    assert cli._bin("sacct") == "/opt/s/bin/sacct"
