"""A job lists the script directive lines that the scheduler will not see."""

from __future__ import annotations

from broker.services import jobs

from .conftest import Api

SCRIPT = "#SBATCH -J mine\n#SBATCH --nodes=64\n#SBATCH hetjob\n#PBS -l nodes=8\necho hi\n"


def test_neutralised_directives_are_listed_at_acceptance_and_on_read(api: Api) -> None:
    _, member, project = api.tenant()
    r = api.submit(project["id"], member, script=SCRIPT)
    assert r.status_code == 202, r.text
    warnings = r.json()["warnings"]
    assert len(warnings) == 3
    assert warnings[0].startswith("line 2: '#SBATCH --nodes=64' neutralised: --nodes ")
    assert "come from the job spec" in warnings[0]
    assert warnings[1].startswith("line 3: '#SBATCH hetjob' neutralised: ")
    assert warnings[2].startswith("line 4: '#PBS -l nodes=8' neutralised: ")
    assert api.get(f"/jobs/{r.json()['id']}", member).json()["warnings"] == warnings
    listed = api.get(f"/jobs?project_id={project['id']}", member).json()["items"]
    assert listed[0]["warnings"] == warnings


def test_the_job_runs_with_the_neutralised_script(api: Api) -> None:
    _, member, project = api.tenant()
    r = api.submit(project["id"], member, script=SCRIPT)
    done = api.drive_until(r.json()["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert done["warnings"] == r.json()["warnings"]


def test_a_script_with_only_allowed_directives_has_no_warnings(api: Api) -> None:
    _, member, project = api.tenant()
    script = "#!/bin/bash\n#SBATCH -J x\n#SBATCH --mail-type=END\necho\n#SBATCH --nodes=64\n"
    r = api.submit(project["id"], member, script=script)
    assert r.status_code == 202, r.text
    assert r.json()["warnings"] == []


def test_warnings_are_capped() -> None:
    warnings = jobs.directive_warnings("#SBATCH -N 2\n" * (jobs.MAX_WARNINGS + 10) + "true\n")
    assert len(warnings) == jobs.MAX_WARNINGS + 1
    assert warnings[-2].startswith(f"line {jobs.MAX_WARNINGS}: '#SBATCH -N 2' neutralised")
    assert warnings[-1] == "... and 10 more neutralised lines"
