"""JobSpec -> sbatch: script directives are an allow-list; the spec sets everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_adapters import JobSpec, create_adapter, neutralise_directives
from scheduler_adapters.slurm.cli import SlurmCliAdapter
from scheduler_adapters.slurm.rest_body import job_description
from scheduler_adapters.slurm.script import build_environment, build_sbatch
from tests.scheduler_adapters import fake_pyslurm

FROM_SPEC = "resources, placement, priority and identity come from the job spec"


def spec(**kw: object) -> JobSpec:
    fields: dict[str, object] = {
        "name": "j",
        "script": "#!/bin/bash\necho hi\n",
        "time_limit_minutes": 5,
    }
    fields.update(kw)
    return JobSpec(**fields)  # type: ignore[arg-type]


def neutralised(line: str) -> bool:
    """Whether ``line``, the only directive of a script, is neutralised."""
    text, removed = neutralise_directives(f"#!/bin/bash\n{line}\necho hi\n")
    if not removed:
        assert text.split("\n")[1] == line
        return False
    assert [(d.line, d.text) for d in removed] == [(2, line)]
    assert text.split("\n")[1] == "#BROKER-REMOVED " + line[1:]
    return True


# Every option that sets resources, placement, priority, timing, identity, accounting,
# the environment or files, in the forms sbatch accepts.
REFUSED_OPTIONS = [
    "-N 2", "-N2", "--nodes=64", "--nodes 64", "-n 8", "--ntasks=8", "-c 4",
    "--cpus-per-task=4", "--mem=64G", "--mem 64G", "--mem-per-cpu=8G", "--mem-per-gpu=8G",
    "-t 600", "-t600", "--time=600", "--time 10:00:00", "--time-min=5", "-p big",
    "--partition=big", "--qos=high", "-q high", "--reservation=r1", "--gres=gpu:8",
    "--gpus=8", "-G 8", "--gpus-per-node=8", "--tmp=100G", "--nice=-100", "--nice",
    "--priority=99999", "--begin=now+1hour", "-b now+1hour", "--deadline=now+1hour",
    "--dependency=afterok:1", "-d afterok:1", "--kill-on-invalid-dep=yes", "--exclusive",
    "--exclusive=user", "--oversubscribe", "-s", "--nodelist=n[1-64]", "-w n1",
    "--exclude=n1", "-x n1", "--constraint=fast", "-C fast", "--switches=1",
    "--uid=0", "--gid=0", "--account=other", "-A other", "-Aother", "--comment=broker:x",
    "--clusters=beta", "-M beta", "--wckey=w", "--export=ALL,LD_PRELOAD=/x",
    "--export=NONE", "--get-user-env", "--chdir=/", "-D /", "--output=/etc/x", "-o /x",
    "--error=/x", "-e /x", "--input=/x", "-i /x", "--open-mode=append", "--wrap=id",
    "--array=1-1000", "-a 1-1000", "--requeue", "--no-requeue", "--hold", "-H",
    "--wait", "-W", "--ignore-pbs", "--parsable", "--verbose", "-v", "--quiet", "-Q",
    "--acctg-freq=0", "--profile=all", "--reboot", "--burst-buffer=x", "--bbf=/x",
    "--licenses=l", "--test-only", "--no-kill", "-k", "--overcommit", "-O",
    "--spread-job", "--hint=nomultithread", "--distribution=block", "--core-spec=1",
    "--propagate=ALL", "--umask=000", "--container=/x", "--mcs-label=x",
    # abbreviations getopt_long resolves (or refuses as ambiguous)
    "--ti=5", "--tim=5", "--par=big", "--res=r1", "--nic=5", "--qo=high", "--acc=x",
    "--job-nam=x", "--mail=END", "--Job-name=x",
    # bundles: any letter but a leading J is refused
    "-N2t5", "-Nt5", "-vN2", "-vJ x", "-vAother", "-HJ x",
]  # fmt: skip


@pytest.mark.parametrize("option", REFUSED_OPTIONS)
def test_refused_options_are_neutralised(option: str) -> None:
    assert neutralised(f"#SBATCH {option}")
    assert neutralised(f"#SBATCH -J name {option}")  # one refused word condemns the line
    assert neutralised(f"#SLURM {option}")  # the old magic word sbatch still reads


@pytest.mark.parametrize(
    "line",
    [
        "#SBATCH hetjob",
        "#SBATCH HetJob",
        "#SBATCH packjob",
        "#SBATCH   hetjob   # next component",
        "#SBATCH --nodes=1 hetjob",
        "#SBATCH -J myhetjob",  # sbatch blanks the word out of the line
        "#SBATCH -J x # hetjob",
        "#SLURM hetjob",
        "#SBATCH :",
        "#SBATCH -J x :",
    ],
)
def test_heterogeneous_job_separators_are_neutralised(line: str) -> None:
    assert neutralised(line)


@pytest.mark.parametrize(
    "line",
    [
        "#SBATCH--nodes=2",  # no space after the magic word
        "#SBATCHING -J x",  # 'ING' is a stray word to sbatch
        "#SBATCH foo",  # a stray word: sbatch refuses it, getopt permutes past it
        "#SBATCH -J x foo",
        "#SBATCH --",
        "#SBATCH -- -J x",
        "#SBATCH -",
        "#SBATCH -J",  # sbatch takes the next directive line's first word as its value
        "#SBATCH --job-name",
        '#SBATCH -J "a --time=7"',
        "#SBATCH -J 'a' --time=7",
        "#SBATCH -J a\\ --time=7",  # sbatch splits an escaped space: --time=7 applies
        "#SBATCH -J \xe9t\xe9",
        "#SBATCH -J a\x0b--time=7",  # a vertical tab separates words in C
        "#SBATCH -J a\r",
    ],
)
def test_lines_that_are_not_plain_allowed_words_are_neutralised(line: str) -> None:
    assert neutralised(line)


@pytest.mark.parametrize(
    "line",
    [
        "#SBATCH -J name",
        "#SBATCH -Jname",
        "#SBATCH -J --time=7",  # getopt takes the next word as -J's value
        "#SBATCH --job-name=x",
        "#SBATCH --job-name x",
        "#SBATCH --job-name=",
        "#SBATCH --mail-type=END",
        "#SBATCH --mail-type END,FAIL",
        "#SBATCH --mail-user=a@b.c",
        "#SBATCH --signal=B:USR1@60",
        "#SBATCH -J x --mail-type=ALL --mail-user=a@b.c --signal=10@30",
        "#SBATCH\t-J\tx",
        "#SBATCH",
        "#SBATCH # --nodes=64 in a comment",
        "#SBATCH -J x # --time=9 in a comment",
        "#SBATCH -J a#b --time=9",  # an unquoted '#' ends the line for sbatch too
        "#SBATCH-J x",  # the magic word is a prefix: this is '-J x' to sbatch
        "  #SBATCH --nodes=64",  # not at column 0: a plain comment to sbatch
        "#sbatch --nodes=64",  # the magic word is case-sensitive
        "# SBATCH --nodes=64",
        "#PB --nodes=64",
    ],
)
def test_allowed_directives_and_comments_are_kept_verbatim(line: str) -> None:
    assert not neutralised(line)


@pytest.mark.parametrize(
    "line",
    [
        "#PBS -l nodes=8",
        "#PBS -l walltime=100:00:00",
        "#PBS -p 5",
        "#PBS -N name",
        "#PBS",
        "#BSUB -n 64",
        "#BSUB -W 600",
        "#BSUB -J name",
    ],
)
def test_pbs_and_bsub_lines_are_neutralised_even_after_the_first_command(line: str) -> None:
    assert neutralised(line)
    text, removed = neutralise_directives(f"#!/bin/bash\necho start\n{line}\n")
    assert [d.line for d in removed] == [3]
    assert "PBS" in removed[0].reason or "BSUB" in removed[0].reason
    assert line not in text.splitlines()


def test_indented_pbs_line_is_a_plain_comment() -> None:
    assert not neutralised("  #PBS -l nodes=8")


def test_directives_after_the_first_command_are_left_alone() -> None:
    for command in ["echo start", ": noop", "  echo indented", "x=1"]:
        script = f"#!/bin/bash\n#SBATCH -J ok\n{command}\n#SBATCH --nodes=64\n#SBATCH hetjob\n"
        assert neutralise_directives(script) == (script, [])


def test_blank_lines_and_comments_do_not_end_the_directives() -> None:
    script = "#!/bin/bash\n\n   \n\t\n# a comment\n   # indented\n#SBATCH --nodes=64\ntrue\n"
    text, removed = neutralise_directives(script)
    assert [d.line for d in removed] == [7]
    assert text.splitlines()[6] == "#BROKER-REMOVED SBATCH --nodes=64"


def test_form_feeds_and_vertical_tabs_are_blank_to_sbatch() -> None:
    script = "#!/bin/bash\n\f\n\v# c\n \f \n#SBATCH --time=7\ntrue\n"  # checked on sbatch
    assert [d.line for d in neutralise_directives(script)[1]] == [5]


@pytest.mark.parametrize("empty", ['""', "''"])
def test_an_empty_quoted_value_cannot_shift_the_next_line(empty: str) -> None:
    # sbatch ends a line's words at an empty quoted word, so its -J takes the next
    # line's first word and '--time=7' becomes an option (checked on sbatch 22.05.8).
    script = f"#!/bin/bash\n#SBATCH -J {empty}\n#SBATCH --mail-user --time=7\ntrue\n"
    text, removed = neutralise_directives(script)
    assert [d.line for d in removed] == [2]
    assert text.split("\n")[1] == f"#BROKER-REMOVED SBATCH -J {empty}"


def test_a_dangling_value_does_not_reach_the_next_line() -> None:
    script = "#!/bin/bash\n#SBATCH -J\n#SBATCH --mail-type=END\ntrue\n"
    text, removed = neutralise_directives(script)
    assert [d.line for d in removed] == [2] and "#SBATCH --mail-type=END" in text


def test_line_numbers_are_the_users_and_warnings_name_the_line() -> None:
    script = "#SBATCH -J ok\n#SBATCH --nodes=64\n#SBATCH hetjob\n#SBATCH -N 2\necho\n"
    text, removed = neutralise_directives(script)
    assert text.startswith("#!/bin/bash\n")
    assert text.count("\n") == script.count("\n") + 1  # one line added, none lost
    assert [(d.line, d.text) for d in removed] == [
        (2, "#SBATCH --nodes=64"),
        (3, "#SBATCH hetjob"),
        (4, "#SBATCH -N 2"),
    ]
    assert removed[0].warning == (
        "line 2: '#SBATCH --nodes=64' neutralised:"
        f" --nodes is not allowed in a script ({FROM_SPEC})"
    )
    long = neutralise_directives("#SBATCH --comment=" + "x" * 500)[1][0].warning
    assert len(long) < 400 and "..." in long


refused_option = st.sampled_from(
    ["nodes", "time", "partition", "qos", "account", "nice", "gres", "export", "chdir"]
)
allowed_pair = st.sampled_from(["-J x", "--job-name=y", "--mail-type=END", "--signal 10"])


@given(
    st.lists(allowed_pair, max_size=2),
    refused_option,
    st.integers(min_value=1, max_value=len("partition")),
    st.sampled_from(["--{o}={v}", "--{o} {v}", "-{s}{v}", "-{s} {v}", "-v{s}{v}", "-J{v} -{s}"]),
    st.text(alphabet="abcXYZ019-=:,@", min_size=1, max_size=8),
    st.lists(allowed_pair, max_size=2),
)
def test_no_refused_option_survives(
    before: list[str], option: str, cut: int, form: str, value: str, after: list[str]
) -> None:
    word = form.format(o=option[:cut], s=option[0].upper(), v=value)
    assert neutralised("#SBATCH " + " ".join([*before, word, *after]))


def test_options_put_broker_values_on_the_command_line() -> None:
    req = build_sbatch(
        spec(
            account="acme",
            tag="u-1",
            partition="debug",
            nodes=2,
            ntasks=4,
            cpus_per_task=2,
            memory_mb=1000,
            gpus_per_node=1,
            working_dir="/w",
            stdout_path="/w/o",
            stderr_path="/w/e",
            nodelist=("n1", "n2"),
            constraints="avx512",
        )
    )
    assert req.options[:3] == ["--parsable", "--export=ALL", "--ignore-pbs"]
    for opt in [
        "--account=acme",
        "--comment=broker:u-1",
        "--partition=debug",
        "--nodes=2",
        "--ntasks=4",
        "--cpus-per-task=2",
        "--mem=1000M",
        "--gpus-per-node=1",
        "--chdir=/w",
        "--output=/w/o",
        "--error=/w/e",
        "--nodelist=n1,n2",
        "--constraint=avx512",
        "--time=5",
        "--exclusive",
    ]:
        assert opt in req.options
    assert "--exclusive" not in build_sbatch(spec(exclusive=False)).options


def test_build_sbatch_neutralises_the_script_and_lists_the_lines() -> None:
    req = build_sbatch(spec(script="#!/bin/bash\n#SBATCH --qos=high\n#PBS -p 5\nid\n"))
    assert "--ignore-pbs" in req.options
    assert [d.text for d in req.removed_directives] == ["#SBATCH --qos=high", "#PBS -p 5"]
    assert (
        req.script
        == "#!/bin/bash\n#BROKER-REMOVED SBATCH --qos=high\n#BROKER-REMOVED PBS -p 5\nid\n"
    )


SCRIPT = "#!/bin/bash\n#SBATCH -J ok\n#SBATCH --nodes=64\n#PBS -l nodes=8\ntrue\n"
EXPECTED = "#!/bin/bash\n#SBATCH -J ok\n#BROKER-REMOVED SBATCH --nodes=64\n#BROKER-REMOVED PBS -l nodes=8\ntrue\n"  # noqa: E501


def _submitted_script(kind: str, tmp_path: Path) -> str:
    job = spec(script=SCRIPT, user="alice")
    if kind == "slurm-cli":
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        sbatch = bin_dir / "sbatch"
        sbatch.write_text(f"#!/bin/bash\ncat > {tmp_path}/script.sh\necho 42\n")
        sbatch.chmod(0o755)
        cli = SlurmCliAdapter("alpha", bin_dir=str(bin_dir), allow_root_jobs=True)
        cli.submit(spec(script=SCRIPT))
        return (tmp_path / "script.sh").read_text()
    if kind == "slurmrestd v0.0.38":
        return str(job_description(job, "v0.0.38")["script"])
    if kind == "slurmrestd v0.0.41":
        return str(job_description(job, "v0.0.41")["job"]["script"])
    if kind == "pyslurm":
        fake_pyslurm.reset()
        create_adapter(
            "pyslurm", "omega", {"module": "tests.scheduler_adapters.fake_pyslurm"}
        ).submit(job)
        return str(fake_pyslurm.SUBMITTED[-1]["script"])
    local = create_adapter("local", "local", {"root_dir": str(tmp_path)})
    job_id = local.submit(spec(script=SCRIPT))
    return (tmp_path / "jobs" / job_id / "script.sh").read_text()


@pytest.mark.parametrize(
    "kind", ["slurm-cli", "slurmrestd v0.0.38", "slurmrestd v0.0.41", "pyslurm", "local"]
)
def test_every_adapter_hands_on_the_neutralised_script(kind: str, tmp_path: Path) -> None:
    assert _submitted_script(kind, tmp_path) == EXPECTED


@pytest.mark.parametrize(
    "bad", [{"time_limit_minutes": 0}, {"nodes": 0}, {"name": "a\nb"}, {"account": "x\ny"}]
)
def test_bad_specs_raise_value_error(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_sbatch(spec(**bad))


def test_environment_is_clean_and_guarded() -> None:
    env = build_environment(
        spec(environment={"OMP_NUM_THREADS": "4", "A": "x,y"}),
        home="/home/u",
        user="u",
        slurm_conf="/etc/slurm.conf",
    )
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "USER": "u",
        "LOGNAME": "u",
        "OMP_NUM_THREADS": "4",
        "A": "x,y",
        "SLURM_CONF": "/etc/slurm.conf",
    }
    for name in ["SBATCH_ACCOUNT", "SLURM_CONF", "1X", "A-B"]:
        with pytest.raises(ValueError):
            build_environment(spec(environment={name: "v"}))
