"""The slurm-cli adapter: fake Slurm tools on a bin_dir (psij style), then live alpha."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler_adapters import (
    AdapterConfigError,
    JobInfo,
    JobSpec,
    JobState,
    SchedulerUnavailable,
    SubmitRejected,
)
from scheduler_adapters.slurm.cli import SlurmCliAdapter
from scheduler_adapters.slurm.common import from_accounting
from scheduler_adapters.slurm.parse import parse_job
from tests._slurm import SlurmTenant, ensure_posix_user

#: a tenant-like POSIX user for the identity tests (made if missing, as the live tests do)
USER = "brokeridtest"

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm" / "22.05"


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\necho "$0 $*" >> {bin_dir}/calls.log\n{body}\n')
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "squeue", f"cat {FIXTURES / 'squeue_finished.json'}")
    fake_tool(
        bin_dir,
        "sacct",
        f"""if [[ "$*" == *--json* ]]; then cat {FIXTURES / "sacct.json"}
else cat {FIXTURES / "sacct_exitcode.txt"}; fi""",
    )
    fake_tool(bin_dir, "sbatch", f"cat > {bin_dir}/script.sh; echo '42;alpha'")
    fake_tool(bin_dir, "scancel", "exit 0")
    return bin_dir


def calls(bin_dir: Path) -> list[str]:
    log = bin_dir / "calls.log"
    return (
        [Path(line.split()[0]).name for line in log.read_text().splitlines()]
        if (log.exists())
        else []
    )


def cli(bin_dir: Path, **kw: Any) -> SlurmCliAdapter:
    return SlurmCliAdapter("alpha", bin_dir=str(bin_dir), allow_root_jobs=True, **kw)


def test_submit_passes_options_and_sanitised_script(fake_bin: Path) -> None:
    job_id = cli(fake_bin).submit(
        JobSpec(
            name="n",
            script="#SBATCH --uid=0\necho hi",
            time_limit_minutes=3,
            account="acme",
            tag="t",
        )
    )
    assert job_id == "42"
    argv = (fake_bin / "calls.log").read_text().split()
    assert "--account=acme" in argv and "--comment=broker:t" in argv and "--time=3" in argv
    script = (fake_bin / "script.sh").read_text()
    assert "#SBATCH --uid" not in script and script.startswith("#!/bin/bash")


def test_status_is_one_squeue_then_one_sacct_with_exit_code_fix(fake_bin: Path) -> None:
    adapter = cli(fake_bin, slurm_cluster="alpha")
    answer = adapter.status(["4", "5", "9", "77"])
    # 4 and 5 are in squeue; 9 only in sacct, whose JSON says exit 0 for `exit 3`.
    assert answer["5"].exit_code == 3 and answer["9"].exit_code == 3
    assert answer["9"].state is JobState.FAILED and "77" not in answer
    assert calls(fake_bin) == ["squeue", "sacct", "sacct"]


def test_ended_jobs_the_controller_knows_are_settled_from_accounting(fake_bin: Path) -> None:
    # 4, 5 and 6 have ended (squeue_finished.json): accounting is asked for them too, and
    # where it has no record of them yet (sacct.json lacks them) the controller's stays.
    answer = cli(fake_bin).status(["4", "5", "6"])
    assert calls(fake_bin) == ["squeue", "sacct", "sacct"]
    assert answer["4"].state is JobState.COMPLETED and answer["5"].exit_code == 3


def test_every_tool_run_is_counted_as_a_request(fake_bin: Path) -> None:
    adapter = cli(fake_bin)
    seen: list[str] = []
    adapter.on_request = seen.append
    adapter.status(["4", "9"])
    assert seen == calls(fake_bin) == ["squeue", "sacct", "sacct"]


def test_from_2302_squeue_is_asked_for_the_brokers_jobs_only(tmp_path: Path) -> None:
    """25.11's squeue --json honours --jobs (22.05's ignores it): once the release is
    known, a poll asks for the wanted ids only, and "Invalid job id specified" (the
    controller knows none of them) means none is live, not an error."""
    fixtures = FIXTURES.parent / "25.11"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(
        bin_dir,
        "squeue",
        f"""if [[ "$*" == *--jobs=9999* ]]; then
  echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1
fi
cat {fixtures / "squeue.json"}""",
    )
    fake_tool(bin_dir, "sacct", f"cat {fixtures / 'sacct.json'}")
    adapter = cli(bin_dir, slurm_cluster="gamma")
    first = adapter.status(["135"])  # the release is learned from this answer
    assert first["135"].state is JobState.RUNNING
    second = adapter.status(["135", "133"])
    assert second["135"].state is JobState.RUNNING
    assert second["133"].state is JobState.COMPLETED  # from sacct
    gone = adapter.status(["9999"])
    assert gone == {}
    assert squeue_args(bin_dir) == [
        ["--json"],
        ["--json", "--jobs=133,135"],
        ["--json", "--jobs=9999"],
    ]


def squeue_args(bin_dir: Path) -> list[list[str]]:
    lines = (bin_dir / "calls.log").read_text().splitlines()
    return [line.split()[1:] for line in lines if Path(line.split()[0]).name == "squeue"]


def test_2205_squeue_is_never_given_jobs(fake_bin: Path) -> None:
    adapter = cli(fake_bin)
    adapter.status(["4"])
    adapter.status(["4", "5"])
    assert squeue_args(fake_bin) == [["--json"], ["--json"]]


T0 = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def _ten_second_run(elapsed_s: int | None) -> JobInfo:
    """The controller's record of a job that ended 10 s after it started."""
    return JobInfo(
        job_id="7", state=JobState.COMPLETED, exit_code=0, nodes=("n1",),
        start_time=T0, end_time=T0 + timedelta(seconds=10), elapsed_s=elapsed_s,
    )  # fmt: skip


def test_accounting_elapsed_leaves_out_time_suspended() -> None:
    # As alpha recorded `sleep 10` suspended for 6 s: squeue end - start 10, sacct 4.
    t0 = T0
    final = _ten_second_run(10)
    accounted = dataclasses.replace(final, elapsed_s=4, exit_code=None)
    merged = from_accounting(final, accounted)
    assert merged.elapsed_s == 4 and merged.exit_code == 0  # the controller's exit code
    still_running = dataclasses.replace(accounted, state=JobState.RUNNING, end_time=None)
    assert from_accounting(final, still_running) == final  # accounting lags: as it is
    # A record of another job that had the same id (before the ids were reset) is not it.
    other = dataclasses.replace(accounted, tag="someone-else")
    assert from_accounting(dataclasses.replace(final, tag="mine"), other).elapsed_s == 10
    # Without comments in accounting, the submit time tells them apart.
    earlier = dataclasses.replace(accounted, tag=None, submit_time=t0 - timedelta(days=3))
    assert from_accounting(dataclasses.replace(final, submit_time=t0), earlier).elapsed_s == 10
    same = dataclasses.replace(accounted, tag=None, submit_time=t0)
    assert from_accounting(dataclasses.replace(final, submit_time=t0), same).elapsed_s == 4


def test_the_controllers_run_time_leaves_out_time_suspended() -> None:
    """squeue's and slurmrestd's record of a job suspended and resumed: ``suspend_time``
    is the resume, ``pre_sus_time`` what it ran before the suspension (as Slurm's
    job_info.c reckons run time). ``sleep 10`` suspended from second 2 to 8: 4 s used,
    not end - start's 10, and 2 s while it is still suspended."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "slurm" / "22.05"
    (record,) = json.loads((fixtures / "squeue_finished.json").read_text())["jobs"][:1]
    t0 = 1_796_000_000
    done = {
        **record, "job_state": "COMPLETED", "start_time": t0, "end_time": t0 + 10,
        "suspend_time": t0 + 8, "pre_sus_time": 2,
    }  # fmt: skip
    assert parse_job(done).elapsed_s == 4
    assert parse_job({**done, "suspend_time": 0, "pre_sus_time": 0}).elapsed_s == 10
    # A suspension before this run started (a requeued job's earlier run) is not its.
    assert parse_job({**done, "suspend_time": t0 - 60, "pre_sus_time": 30}).elapsed_s == 10
    stopped = {**done, "job_state": "SUSPENDED", "suspend_time": t0 + 2, "end_time": t0 + 99}
    assert parse_job(stopped).elapsed_s == 2


def test_a_suspension_accounting_missed_is_not_charged() -> None:
    """Accounting can miss a suspension (CI saw slurmdbd's elapsed 11 for ``sleep 10``
    suspended 6 s as soon as it ran); the controller's run time still leaves it out, and
    the lower of the two is the time used."""
    final = _ten_second_run(4)
    missed = dataclasses.replace(final, elapsed_s=10, exit_code=None)
    assert from_accounting(final, missed).elapsed_s == 4
    assert from_accounting(dataclasses.replace(final, elapsed_s=None), missed).elapsed_s == 10


@pytest.mark.parametrize(
    ("stderr", "error"),
    [
        (
            "sbatch: error: Batch job submission failed: Invalid account or account/partition "
            "combination specified",
            SubmitRejected,
        ),
        (
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
            "(connect failure)",
            SchedulerUnavailable,
        ),
        ("sbatch: fatal: Could not establish a configuration source", AdapterConfigError),
    ],
)
def test_sbatch_failures_are_classified(
    fake_bin: Path, stderr: str, error: type[Exception]
) -> None:
    fake_tool(fake_bin, "sbatch", f"echo {shlex.quote(stderr)} >&2; exit 1")
    with pytest.raises(error) as caught:
        cli(fake_bin).submit(JobSpec(name="n", script="true", time_limit_minutes=1))
    assert "error:" not in str(caught.value).split("]", 1)[-1][:10]


def test_scancel_of_finished_job_is_a_no_op(fake_bin: Path) -> None:
    fake_tool(
        fake_bin,
        "scancel",
        "echo 'scancel: error: Kill job error on job id 5: Job/step "
        "already completing or completed' >&2; exit 1",
    )
    cli(fake_bin).cancel("5")
    fake_tool(
        fake_bin, "scancel", "echo 'scancel: error: Unable to contact slurm controller' >&2; exit 1"
    )
    with pytest.raises(SchedulerUnavailable):
        cli(fake_bin).cancel("5")


def test_timeout_is_transient(fake_bin: Path) -> None:
    fake_tool(fake_bin, "squeue", "sleep 5")
    with pytest.raises(SchedulerUnavailable):
        cli(fake_bin, timeout_s=0.3).status(["1"])


def test_root_jobs_are_refused_without_a_user(fake_bin: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root could submit for others")
    with pytest.raises(SubmitRejected, match="root"):
        SlurmCliAdapter("alpha", bin_dir=str(fake_bin)).submit(
            JobSpec(name="n", script="true", time_limit_minutes=1)
        )
    with pytest.raises(SubmitRejected, match="no POSIX user"):
        cli(fake_bin).submit(
            JobSpec(name="n", script="true", time_limit_minutes=1, user="no-such-user-xyz")
        )


def test_tools_run_as_the_user_with_only_the_users_ids() -> None:
    """sbatch runs with the user's uid and gid and the user's groups only (root's
    supplementary groups dropped), started by the user's helper (``runas``)."""
    if os.geteuid() != 0:
        pytest.skip("only root can run a tool as another user")
    ensure_posix_user(USER)
    pw = pwd.getpwnam(USER)
    # pytest's tmp_path is root's alone: the user could not reach a tool there
    fake_bin = Path(tempfile.mkdtemp(prefix="broker-ids-"))
    try:
        fake_bin.chmod(0o777)
        ids = fake_bin / "ids.txt"
        fake_tool(
            fake_bin, "sbatch", f"cat >/dev/null; echo $(id -u) $(id -g) $(id -G) > {ids}; echo 7"
        )
        spec = JobSpec(name="n", script="true", time_limit_minutes=1, user=USER, working_dir="/")
        adapter = cli(fake_bin)
        assert adapter.submit(spec) == "7"
        uid, gid, *groups = ids.read_text().split()
        adapter.close()
    finally:
        shutil.rmtree(fake_bin)
    assert (int(uid), int(gid)) == (pw.pw_uid, pw.pw_gid)
    assert sorted(map(int, groups)) == sorted(set(os.getgrouplist(USER, pw.pw_gid)))


def test_a_tool_the_user_cannot_run_is_a_configuration_error(fake_bin: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can run a tool as another user")
    ensure_posix_user(USER)
    (fake_bin / "sbatch").chmod(0o600)  # the user cannot execute it
    with pytest.raises(AdapterConfigError, match="Permission denied"):
        cli(fake_bin).submit(
            JobSpec(name="n", script="true", time_limit_minutes=1, user=USER, working_dir="/")
        )


def test_a_working_directory_the_user_cannot_enter_rejects_the_job(fake_bin: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can run a tool as another user")
    ensure_posix_user(USER)
    spec = JobSpec(name="n", script="true", time_limit_minutes=1, user=USER, working_dir="/root")
    with pytest.raises(SubmitRejected, match="cannot run sbatch in /root: Permission denied"):
        cli(fake_bin).submit(spec)
    gone = dataclasses.replace(spec, working_dir="/nonexistent/dir")
    with pytest.raises(SubmitRejected, match="/nonexistent/dir: does not exist"):
        cli(fake_bin).submit(gone)


@pytest.fixture
def open_bin() -> Iterator[Path]:
    """A bin_dir another user can reach (pytest's tmp_path is root's alone)."""
    bin_dir = Path(tempfile.mkdtemp(prefix="broker-bin-"))
    bin_dir.chmod(0o777)
    yield bin_dir
    shutil.rmtree(bin_dir)


@pytest.mark.parametrize("as_user", [False, True], ids=["as-broker", "as-user"])
def test_the_jobs_environment_goes_through_export_file_not_sbatchs_own(
    open_bin: Path, as_user: bool
) -> None:
    """sbatch (and, as a user, the helper that starts it, root until it drops its ids)
    run in the tools' fixed environment: what a tenant sets (a locale path, a gconv
    path, an SBATCH_ option) reaches the job only, through --export-file, every value
    intact (spaces, line breaks)."""
    if as_user and os.geteuid() != 0:
        pytest.skip("only root can run a tool as another user")
    out = Path(tempfile.mkdtemp(prefix="broker-env-"))
    out.chmod(0o777)
    fake_tool(
        open_bin,
        "sbatch",
        f"""cat > /dev/null
env > {out}/sbatch-env.txt
for a in "$@"; do case $a in --export-file=*) fd=${{a#--export-file=}};; esac; done
cat /dev/fd/$fd > {out}/job-env.bin
echo 9""",
    )
    env = {"LOCPATH": "/tmp/evil", "GCONV_PATH": "/tmp/evil", "MSG": "two\nlines and spaces"}
    user = None
    if as_user:
        ensure_posix_user(USER)
        user = USER
    spec = JobSpec(
        name="n", script="true", time_limit_minutes=1, environment=env, user=user, working_dir="/"
    )
    adapter = cli(open_bin)
    try:
        assert adapter.submit(spec) == "9"
        sbatch_env = dict(
            line.split("=", 1) for line in (out / "sbatch-env.txt").read_text().splitlines()
        )
        entries = (out / "job-env.bin").read_bytes().decode().split("\0")
    finally:
        adapter.close()
        shutil.rmtree(out)
    assert not {"LOCPATH", "GCONV_PATH", "MSG"} & sbatch_env.keys()
    assert set(sbatch_env) <= {"PATH", "LANG", "TZ", "SLURM_CONF", "PWD", "SHLVL", "_"}
    job_env = dict(entry.split("=", 1) for entry in entries)
    assert job_env["LOCPATH"] == job_env["GCONV_PATH"] == "/tmp/evil"
    assert job_env["MSG"] == "two\nlines and spaces" and job_env["PATH"]


# ---------------------------------------------------------------------------- live alpha
def alpha(tenant: SlurmTenant) -> SlurmCliAdapter:
    return SlurmCliAdapter("alpha", **tenant.clusters["alpha"]["options"])


def wait(adapter: SlurmCliAdapter, job_id: str, until: Any, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = adapter.status([job_id]).get(job_id)
        if info is not None and until(info):
            return info
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached the expected state")


@pytest.mark.slurm
def test_live_job_runs_as_the_user_and_script_cannot_change_account(
    slurm_tenant: SlurmTenant,
) -> None:
    adapter = alpha(slurm_tenant)
    work = slurm_tenant.workdir("alpha", uuid.uuid4().hex[:12])
    script = "#!/bin/bash\n#SBATCH --account=root\n#SBATCH --comment=forged\nid -un\n"
    job_id = adapter.submit(
        JobSpec(
            name="who",
            script=script,
            time_limit_minutes=1,
            account=slurm_tenant.account,
            user=slurm_tenant.user,
            tag="who-" + uuid.uuid4().hex,
            working_dir=str(work),
            stdout_path=str(work / "out.txt"),
        )
    )
    info = wait(adapter, job_id, lambda i: i.state.terminal)
    assert info.state is JobState.COMPLETED and info.account == slurm_tenant.account
    assert info.tag and info.tag.startswith("who-")
    assert (work / "out.txt").read_text().strip() == slurm_tenant.user


@pytest.mark.slurm
def test_live_sacct_path_reports_exit_3(
    slurm_tenant: SlurmTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = alpha(slurm_tenant)
    work = slurm_tenant.workdir("alpha", uuid.uuid4().hex[:12])
    job_id = adapter.submit(
        JobSpec(
            name="x3",
            script="exit 3",
            time_limit_minutes=1,
            account=slurm_tenant.account,
            user=slurm_tenant.user,
            working_dir=str(work),
        )
    )
    wait(adapter, job_id, lambda i: i.state.terminal)
    # Pretend the controller forgot the job (MinJobAge passed): the answer comes from
    # sacct, whose 22.05 JSON says exit code 0, corrected from `sacct -o ExitCode`.
    real_json = adapter._json

    def no_squeue(tool: str, args: list[str]) -> dict[str, Any]:
        return {"jobs": []} if tool == "squeue" else real_json(tool, args)

    monkeypatch.setattr(adapter, "_json", no_squeue)
    info = wait(adapter, job_id, lambda i: i.state.terminal, timeout_s=20)
    assert (info.state, info.exit_code) == (JobState.FAILED, 3)
    assert info.elapsed_s is not None and info.nodes == ("localhost",)


@pytest.mark.slurm
def test_live_unknown_account_is_rejected(slurm_tenant: SlurmTenant) -> None:
    with pytest.raises(SubmitRejected, match="Invalid account"):
        alpha(slurm_tenant).submit(
            JobSpec(
                name="n",
                script="true",
                time_limit_minutes=1,
                account="no-such-account",
                user=slurm_tenant.user,
                working_dir=str(slurm_tenant.workdir("alpha", "rej")),
            )
        )


@pytest.mark.slurm
def test_live_drain_and_resume(slurm_tenant: SlurmTenant) -> None:
    adapter = alpha(slurm_tenant)
    adapter.drain("localhost", "contract test")
    try:
        node = next(n for n in adapter.nodes() if n.name == "localhost")
        assert "drain" in node.state and node.reason == "contract test"
        # The other nodes (alpha's partition gpu) are not touched.
        assert all("drain" not in n.state for n in adapter.nodes() if n.name != "localhost")
    finally:
        adapter.resume("localhost")
    assert "drain" not in next(n for n in adapter.nodes() if n.name == "localhost").state


def test_a_requeued_job_waits_for_accountings_record_of_its_runs() -> None:
    """A requeued job the controller says has ended, whose earlier run accounting has not
    recorded yet (slurmdbd lags), is followed as running a while rather than settled
    without that run; once the record is there, or after the wait, it is settled."""
    now = datetime.now(UTC)
    final = JobInfo(
        job_id="7",
        state=JobState.COMPLETED,
        native_state="COMPLETED",
        restart_count=1,
        start_time=now - timedelta(seconds=6),
        end_time=now,
    )
    assert from_accounting(final, None).state is JobState.RUNNING
    first = JobInfo(job_id="7", state=JobState.PENDING, native_state="REQUEUED", elapsed_s=2)
    recorded = JobInfo(job_id="7", state=JobState.RUNNING, runs=(first,))
    settled = from_accounting(final, recorded)
    assert settled.state is JobState.COMPLETED and settled.runs == (first,)
    old = dataclasses.replace(final, end_time=now - timedelta(minutes=5))
    assert from_accounting(old, None).state is JobState.COMPLETED  # waited long enough
