"""deploy/slurm/devcluster without root: the source build's cache and the rendered files.

The build runs a fake Slurm source tree (a ``configure`` that writes a Makefile), so the
cache key, the lock, the staging and the stamp are exercised in well under a second.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from broker.config import load_clusters_file

DEVCLUSTER = Path(__file__).resolve().parent.parent / "deploy" / "slurm" / "devcluster"

CONFIGURE = """#!/bin/bash
prefix=${1#--prefix=}
echo "configure $*" >> "$BUILD_TRACE"
cat > Makefile <<EOF
all:
\t@test -z "$FAIL_MAKE" || exit 7
\techo built > slurmctld
install:
\tmkdir -p \\$(DESTDIR)$prefix/sbin
\tcp slurmctld \\$(DESTDIR)$prefix/sbin/
EOF
"""


@pytest.fixture
def dc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("HPC_BROKER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HPC_BROKER_DEV_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HPC_BROKER_SLURM_TARBALL", str(tmp_path / "slurm-fake.tar.xz"))
    monkeypatch.setenv("BUILD_TRACE", str(tmp_path / "trace"))
    loader = importlib.machinery.SourceFileLoader("devcluster_under_test", str(DEVCLUSTER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    monkeypatch.setattr(module, "ensure_build_packages", lambda: None)
    return module


def make_tarball(tmp_path: Path, version: str) -> Path:
    src = tmp_path / f"src-{version}" / "slurm-fake"
    src.mkdir(parents=True)
    (src / "configure").write_text(CONFIGURE)
    (src / "configure").chmod(0o755)
    (src / "VERSION").write_text(version)
    tarball = tmp_path / "slurm-fake.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(src, arcname="slurm-fake")
    return tarball


def builds(tmp_path: Path) -> int:
    trace = tmp_path / "trace"
    return len(trace.read_text().splitlines()) if trace.exists() else 0


def test_build_is_cached_by_the_tarballs_sha256(dc: ModuleType, tmp_path: Path) -> None:
    make_tarball(tmp_path, "1")
    prefix = dc.ensure_slurm_build()
    assert prefix.parent == tmp_path / "cache" and prefix.name.startswith("slurm-")
    assert (prefix / "sbin" / "slurmctld").read_text() == "built\n"
    assert (prefix / dc.BUILD_STAMP).exists()
    assert dc.ensure_slurm_build() == prefix and builds(tmp_path) == 1  # cached
    assert not [p for p in prefix.parent.iterdir() if ".build-" in p.name]  # no leftovers

    make_tarball(tmp_path, "2")  # a new tarball: a new prefix, built again
    dc._PREFIX.clear()
    assert dc.ensure_slurm_build() != prefix and builds(tmp_path) == 2


def test_a_failed_build_leaves_no_prefix(
    dc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tarball(tmp_path, "1")
    monkeypatch.setenv("FAIL_MAKE", "1")
    with pytest.raises(SystemExit, match="failed"):
        dc.ensure_slurm_build()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f".{dc.slurm_prefix().name}.lock"]
    monkeypatch.delenv("FAIL_MAKE")
    assert (dc.ensure_slurm_build() / dc.BUILD_STAMP).exists()  # the next run builds


def test_concurrent_runs_build_once(dc: ModuleType, tmp_path: Path) -> None:
    make_tarball(tmp_path, "1")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(dc.ensure_slurm_build())) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 3
    assert builds(tmp_path) == 1


def test_rendered_clusters_files(dc: ModuleType, tmp_path: Path) -> None:
    make_tarball(tmp_path, "1")
    for names in (["alpha", "beta"], ["alpha", "beta", "gamma"]):
        path = tmp_path / f"clusters-{len(names)}.toml"
        path.write_text(dc.clusters_toml(names))
        clusters = {c.name: c for c in load_clusters_file(path)}
        if len(names) == 2:
            assert set(clusters) == {"alpha", "beta"}
            continue
        assert set(clusters) == {"alpha", "beta", "gamma", "gamma-cli", "gamma-pyslurm"}
        bin_dir = str(dc.slurm_prefix() / "bin")
        assert clusters["gamma"].adapter == "slurmrestd"
        assert clusters["gamma"].options["bin_dir"] == bin_dir
        assert clusters["gamma-cli"].adapter == "slurm-cli"
        assert clusters["gamma-cli"].options["slurm_cluster"] == "gamma"
        assert clusters["gamma-cli"].options["bin_dir"] == bin_dir
        assert clusters["gamma-pyslurm"].adapter == "pyslurm"
        assert clusters["gamma-pyslurm"].options["slurm_cluster"] == "gamma"
        assert "bin_dir" not in clusters["alpha"].options


def test_every_cluster_stores_job_comments_and_gamma_has_its_own_slurmdbd(
    dc: ModuleType,
) -> None:
    for name in dc.CLUSTERS:
        assert "\nAccountingStoreFlags=job_comment\n" in dc.slurm_conf(name)
    assert f"AccountingStoragePort={dc.DBD_PORT}\n" in dc.slurm_conf("alpha")
    gamma_port = dc.DBDS["25.11"]["port"]
    assert gamma_port != dc.DBD_PORT
    assert f"AccountingStoragePort={gamma_port}\n" in dc.slurm_conf("gamma")
    gamma_dbd = dc.slurmdbd_conf("25.11")
    assert f"DbdPort={gamma_port}\n" in gamma_dbd
    assert f"StorageLoc={dc.DBDS['25.11']['db']}\n" in gamma_dbd
    assert dc.DBDS["25.11"]["db"] != dc.DB_NAME


def test_pyslurm_wheel_is_built_once_per_slurm_build_and_python(
    dc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tarball(tmp_path, "1")
    dc.ensure_slurm_build()
    calls: list[list[str]] = []

    def fake_run(argv: list[str], env: dict[str, str] | None = None, **kw: object) -> object:
        calls.append([str(a) for a in argv])
        if "wheel" in argv and "-w" in argv:
            assert env is not None and env["SLURM_LIB_DIR"].endswith("/lib")
            out = Path(argv[argv.index("-w") + 1])
            out.mkdir(parents=True)
            (out / "pyslurm-25.11.2-cp311-cp311-linux_x86_64.whl").write_text("whl")
        stdout = "cp311\n" if "-c" in argv else ""
        return subprocess.CompletedProcess(argv, 0, stdout, "")

    monkeypatch.setattr(dc, "run", fake_run)
    wheel = dc.ensure_pyslurm_wheel("/usr/bin/python3")
    assert wheel.name.startswith("pyslurm-25.11.2-") and wheel.read_text() == "whl"
    assert wheel.parent.name == f"pyslurm-25.11.2-{dc.slurm_prefix().name[6:]}-cp311"
    builds_of_wheel = sum("wheel" in c and "-w" in c for c in calls)
    assert dc.ensure_pyslurm_wheel("/usr/bin/python3") == wheel
    assert sum("wheel" in c and "-w" in c for c in calls) == builds_of_wheel == 1
    wheel_call = next(c for c in calls if "wheel" in c and "-w" in c)
    assert "--no-build-isolation" in wheel_call and "pyslurm==25.11.2" in wheel_call


def test_usage() -> None:
    proc = subprocess.run(
        ["python3", str(DEVCLUSTER), "up", "--four"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--three" in proc.stderr


def test_every_cluster_has_a_gpu_partition_of_fake_gpus(dc: ModuleType, tmp_path: Path) -> None:
    make_tarball(tmp_path, "1")
    path = tmp_path / "clusters.toml"
    path.write_text(dc.clusters_toml(list(dc.CLUSTERS)))
    loaded = {c.name: c for c in load_clusters_file(path)}
    for name, c in dc.CLUSTERS.items():
        conf = dc.slurm_conf(name)
        assert "\nGresTypes=gpu\n" in conf
        assert "\nAccountingStorageTRES=cpu,mem,node,billing,gres/gpu\n" in conf
        gpu_nodes = list(c["gpu_nodes"])
        assert gpu_nodes == [f"{name}-g1", f"{name}-g2"]
        for node in gpu_nodes:
            assert f"NodeName={node} " in conf and " Gres=gpu:h200:2 " in conf
        # The CPU partition stays the default; the GPU one bills CPUs and GPUs.
        part = next(line for line in conf.splitlines() if line.startswith("PartitionName=gpu "))
        assert "Default=YES" not in part and f"Nodes={','.join(gpu_nodes)} " in part
        assert f"Nodes={','.join(c['nodes'])} Default=YES" in conf
        weights = conf[conf.index("PartitionName=gpu ") :].split("TRESBillingWeights=")[1]
        assert weights.split()[0].endswith(",GRES/gpu=500")
        # 22.05 refuses a node named localhost listed before other nodes on its host.
        assert conf.index(f"NodeName={gpu_nodes[0]} ") < conf.index(
            f"NodeName={next(iter(c['nodes']))} "
        )
        gres = dc.gres_conf(name)
        assert "\nAutoDetect=off\n" in gres
        for node in gpu_nodes:
            files = dc.gpu_files(name, node)
            assert f"NodeName={node} Name=gpu Type=h200 File={files}/nvidia[0-1]\n" in gres
        for entry, cluster in loaded.items():
            if entry == name or entry.startswith(f"{name}-"):
                parts = {p.name: p for p in cluster.partitions}
                assert list(parts) == [c["partition"], "gpu"]
                assert parts[c["partition"]].gpus_per_node == 0
                gpu = parts["gpu"]
                assert (gpu.nodes, gpu.gpus_per_node, gpu.cpus_per_node) == (2, 2, 2)
                assert gpu.validation_environment == {"NUMBA_ENABLE_CUDASIM": "1"}
                assert "--quick" in gpu.validation_args
                per_cpu = c["rate_tflops"] / c["cpus"]
                assert gpu.rate_tflops == pytest.approx(2 * per_cpu + 2 * 0.5)


# The foreground daemon's Popen is dropped while it runs, as the script means it to be.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("foreground", [True, False], ids=["slurmrestd-like", "forking"])
def test_daemons_start_in_the_state_directory_not_the_callers(
    dc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, foreground: bool
) -> None:
    """A daemon started from a checkout keeps no hold on it: slurmrestd works in the
    directory it was started in, and after the checkout it was started from was removed,
    beta's failed a submission ("getcwd failed") and the broker found beta down."""
    dc.STATE.mkdir(parents=True)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    pidfile, seen = tmp_path / "d.pid", tmp_path / "cwd"
    # exec: the pid written (or, forking, the child's pid) is the process named "sleep"
    body = f"pwd > {seen}; exec sleep 30"
    forks = f"({body}) >/dev/null 2>&1 & echo $! > {pidfile}"
    argv = ["sh", "-c", body if foreground else forks]
    dc.ensure_daemon("sleep", pidfile, argv, {}, restart=False,
                     logfile=tmp_path / "d.log" if foreground else None)  # fmt: skip
    try:
        for _ in range(100):
            if seen.exists() and seen.read_text():
                break
            time.sleep(0.05)
        assert Path(seen.read_text().strip()) == dc.STATE
    finally:
        dc.stop(pidfile, "sleep")
