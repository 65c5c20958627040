"""JobSpec -> sbatch: broker-owned directives cannot be set from the user's script."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_adapters import JobSpec
from scheduler_adapters.slurm.script import build_environment, build_sbatch, sanitize_script


def spec(**kw: object) -> JobSpec:
    fields: dict[str, object] = {
        "name": "j",
        "script": "#!/bin/bash\necho hi\n",
        "time_limit_minutes": 5,
    }
    fields.update(kw)
    return JobSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "directive",
    [
        "#SBATCH --account=other",
        "#SBATCH --account other",
        "#SBATCH -A other",
        "#SBATCH -Aother",
        "#SBATCH --acc=other",
        "#SBATCH --comment=broker:forged",
        "#SBATCH --uid=0",
        "#SBATCH --gid=0",
        "#SBATCH --clusters=beta",
        "#SBATCH -M beta",
        "#SBATCH --array=1-1000",
        "#SBATCH -a 1-1000",
        "#SBATCH --ntasks=2 --account=other",
        "#SBATCH -vA other",
        '#SBATCH --job-name="x y" -A other',
        "#SBATCH --cluster=beta",
    ],
)
def test_owned_directives_are_neutralised(directive: str) -> None:
    text, removed = sanitize_script(f"#!/bin/bash\n{directive}\necho hi\n")
    assert removed == [directive]
    assert not any(line.startswith("#SBATCH") for line in text.splitlines())
    assert text.splitlines()[1] == "#BROKER-REMOVED " + directive[1:]


@pytest.mark.parametrize(
    "directive",
    [
        "#SBATCH --ntasks=4",
        "#SBATCH -J acct",
        "#SBATCH -JAlpha",
        "#SBATCH --mem=1G",
        "#SBATCH --acctg-freq=30",
        "#SBATCH --mail-user=a@b.c",
    ],
)
def test_other_directives_are_kept(directive: str) -> None:
    text, removed = sanitize_script(f"#!/bin/bash\n{directive}\necho hi\n")
    assert removed == [] and directive in text.splitlines()


def test_directives_after_the_first_command_are_left_alone() -> None:
    script = "#!/bin/bash\necho start\n#SBATCH --account=other\n"
    assert sanitize_script(script) == (script, [])


def test_shebang_is_added_when_missing() -> None:
    text, _ = sanitize_script("echo hi")
    assert text.startswith("#!/bin/bash\n")


@given(
    st.sampled_from(["--account", "--acco", "--comment", "--uid", "--array", "-A", "-M"]),
    st.text(alphabet="abcXYZ019-=:", min_size=1, max_size=8),
)
def test_no_owned_directive_survives(option: str, value: str) -> None:
    line = f"#SBATCH {option}={value}" if option.startswith("--") else f"#SBATCH {option}{value}"
    text, _ = sanitize_script(f"#!/bin/bash\n#SBATCH -N 1\n{line}\ntrue\n")
    assert line not in text.splitlines()


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
    assert req.options[:2] == ["--parsable", "--export=ALL"]
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
