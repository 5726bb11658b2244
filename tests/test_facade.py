"""The façade: files become a Plan once (jobs, clusters, pipelines and their step jobs), and what the Plan offers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import azbai
from tests.conftest import CORPUS, DATA, ROOT

STYLE = ROOT / "recipes/style-transfer"
QUICKSTART = CORPUS / "recipes/CNTK/CNTK-GPU-Python/job.json"


def test_import_azbai_loads_no_sdk() -> None:
    """``import azbai`` and reaching its functions pull in neither azureml, azure.* nor click."""
    code = (
        "import sys, azbai\n"
        "azbai.load, azbai.validate, azbai.migrate, azbai.Plan\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'azureml', 'azure', 'click', 'yaml', 'torch'})\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_public_names_are_all_importable() -> None:
    for name in azbai.__all__:
        assert getattr(azbai, name) is not None, name
    with pytest.raises(AttributeError):
        azbai.no_such_name  # noqa: B018


def test_load_reads_a_job_and_a_pipeline_into_plans() -> None:
    job = azbai.load(QUICKSTART, storage_account="mystorage", name="quick")
    assert (job.name, len(job.steps), job.source.toolkit) == ("quick", 1, "cntkSettings")
    assert {d.account_name for d in job.datastores} == {"mystorage"}
    pipeline = azbai.load(STYLE / "pipeline.json", storage_account="mystorage")
    assert [s.name for s in pipeline.steps] == ["split", "style", "stitch"]
    assert pipeline.trigger is not None and {d.account_name for d in pipeline.datastores} >= {"mystorage"}


def test_load_refuses_job_options_for_a_pipeline_and_unknown_keywords() -> None:
    with pytest.raises(azbai.AzbaiError, match="cluster: not for pipeline files"):
        azbai.load(STYLE / "pipeline.json", cluster=STYLE / "cluster.json")
    with pytest.raises(azbai.AzbaiError, match="unexpected keyword argument 'storage_acount'"):
        azbai.load(QUICKSTART, storage_acount="x")  # type: ignore[call-arg]


def test_a_bad_file_raises_spec_error_with_every_diagnostic(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"properties": {"nodeCount": "two", "stdOutErrPathPrefix": 5}}))
    with pytest.raises(azbai.SpecError) as caught:
        azbai.load(path)
    paths = {d.path for d in caught.value.diagnostics if d.is_error}
    assert {"properties.nodeCount", "properties.stdOutErrPathPrefix"} <= paths


def test_validate_passes_the_account_on_to_the_cluster_file() -> None:
    """The same flags resolve the cluster's placeholder in validate as in migrate (it used to warn)."""
    report = azbai.validate(STYLE / "batch.job.json", cluster=STYLE / "cluster.json", storage_account="acct")
    assert report.ok
    assert not [d for d in report.warnings if d.code == "unresolved-placeholder"], report.warnings
    without = azbai.validate(STYLE / "batch.job.json", cluster=STYLE / "cluster.json")
    unresolved = [d for d in without.warnings if d.code == "unresolved-placeholder"]
    assert {Path(d.file).name for d in unresolved if d.file} == {"cluster.json"}


def test_validate_reads_a_pipeline_file_as_a_pipeline_with_its_step_jobs(tmp_path: Path) -> None:
    (tmp_path / "step.job.json").write_text(
        json.dumps({"properties": {"nodeCount": 1, "customToolkitSetings": {}}})
    )
    pipeline = {"name": "p", "steps": [{"name": "a", "job": "step.job.json"}]}
    (tmp_path / "pipeline.json").write_text(json.dumps(pipeline))
    report = azbai.validate(tmp_path / "pipeline.json")
    assert not report.ok
    assert {Path(d.file).name for d in report.diagnostics if d.file} == {"step.job.json"}
    assert any(d.code == "unknown-key" and "customToolkitSettings" in d.message for d in report.warnings)
    assert azbai.validate(STYLE / "pipeline.json", storage_account="acct").ok


def test_undescribed_mounts_are_found_by_code_not_by_wording() -> None:
    job = CORPUS / "doc-examples/documentation/using-azure-cli-20/block55.job.json"
    notes = [n for n in azbai.load(job).notes if n.code == "undescribed-mount"]
    assert notes
    report = azbai.validate(job)
    assert {(d.path, d.code) for d in report.warnings} >= {(n.field, n.code) for n in notes}
    described = azbai.validate(job, mounts=["external=afs://mystorage/external"])
    assert not [d for d in described.warnings if d.code == "undescribed-mount"]


def test_every_note_has_a_stable_code() -> None:
    plans = [azbai.load(p) for p in sorted((CORPUS / "recipes").rglob("job.json"))]
    codes = {n.code for plan in plans for n in plan.notes}
    assert codes and all(code and code == code.lower() and " " not in code for code in codes)


def test_plan_json_round_trip_and_format() -> None:
    plan = azbai.load(STYLE / "pipeline.json", storage_account="acct")
    assert azbai.Plan.from_json(plan.to_json()) == plan
    old = json.loads(plan.to_json())
    old["format"] = 1
    with pytest.raises(azbai.PlanError, match=r"format 2 \(found 1\)"):
        azbai.Plan.from_json(json.dumps(old))
    with pytest.raises(azbai.PlanError, match="invalid JSON"):
        azbai.Plan.from_json("{")


def test_with_parameters_sets_defaults_and_refuses_unknown_names() -> None:
    plan = azbai.load(STYLE / "pipeline.json")
    styled = plan.with_parameters(style="7")
    assert {p.name: p.default for p in styled.parameters}["style"] == "7"
    assert {p.name: p.default for p in plan.parameters}["style"] != "7"  # the plan itself is unchanged
    with pytest.raises(azbai.PlanError, match="no parameter colour"):
        plan.with_parameters(colour="red")


def test_migrate_takes_a_file_or_a_plan(tmp_path: Path) -> None:
    result = azbai.migrate(QUICKSTART, tmp_path / "from-file", storage_account="acct")
    names = {p.relative_to(result.output_dir).as_posix() for p in result.files}
    assert {
        "plan.json",
        "pipeline.py",
        "migrate.ipynb",
        "MIGRATION.md",
        "snapshot/azbai_launcher.py",
    } <= names
    plan = azbai.load(QUICKSTART, storage_account="acct")
    again = azbai.migrate(plan, tmp_path / "from-plan")
    assert (again.output_dir / "pipeline.py").read_text() == (result.output_dir / "pipeline.py").read_text()
    with pytest.raises(azbai.AzbaiError, match="unknown target 'v9'"):
        azbai.migrate(plan, tmp_path / "x", target="v9")
    with pytest.raises(azbai.AzbaiError, match="not of migrating a plan"):
        azbai.migrate(plan, tmp_path / "x", cluster="c.json")


def test_pipeline_step_secrets_stay_in_memory(tmp_path: Path) -> None:
    job = json.loads((DATA / "pipeline/produce.job.json").read_text())
    job["properties"]["secrets"] = [{"name": "TOKEN", "value": "s3cr3t-value"}]
    (tmp_path / "produce.job.json").write_text(json.dumps(job))
    spec = json.loads((DATA / "pipeline/pipeline.json").read_text())
    for name in ("consume.job.json", "consume.py", "produce.py", "entry.py"):
        (tmp_path / name).write_bytes((DATA / "pipeline" / name).read_bytes())
    (tmp_path / "pipeline.json").write_text(json.dumps(spec))
    from azbai.facade import secret_values

    plan = azbai.load(tmp_path / "pipeline.json")
    assert "s3cr3t-value" not in plan.to_json()
    assert secret_values(plan) == {"TOKEN": "s3cr3t-value"}
    assert secret_values(plan.with_parameters()) == {"TOKEN": "s3cr3t-value"}


def test_each_plan_keeps_the_secret_values_of_its_own_file(tmp_path: Path) -> None:
    from azbai.facade import secret_values

    plans = {}
    for stage in ("dev", "prod"):
        job = {
            "properties": {
                "nodeCount": 1,
                "customToolkitSettings": {"commandLine": "echo $TOKEN"},
                "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
                "secrets": [{"name": "TOKEN", "value": f"{stage}-token"}],
            }
        }
        path = tmp_path / stage / "train" / "job.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(job))
        plans[stage] = azbai.load(path)
    assert plans["dev"] == plans["prod"]  # the same plan: only the secret values differ
    assert secret_values(plans["dev"]) == {"TOKEN": "dev-token"}
    assert secret_values(plans["prod"]) == {"TOKEN": "prod-token"}
    assert secret_values(plans["dev"].with_parameters()) == {"TOKEN": "dev-token"}
    kept = plans.pop("dev").with_parameters()  # the copy outlives the plan that was read
    assert secret_values(kept) == {"TOKEN": "dev-token"}


def test_a_too_long_source_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    import shutil

    from azbai.errors import AzbaiError

    folder = tmp_path / "pl"
    shutil.copytree(ROOT / "recipes" / "style-transfer", folder)
    spec = json.loads((folder / "pipeline.json").read_text())
    parallel = next(s for s in spec["steps"] if "parallel" in s)
    parallel["parallel"]["sourceDirectory"] = "d" * 300
    (folder / "pipeline.json").write_text(json.dumps(spec))
    with pytest.raises(
        AzbaiError, match=f"File name too long .*the sourceDirectory of step '{parallel['name']}'"
    ):
        azbai.migrate(folder / "pipeline.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_empty_job_of_a_pipeline_step_is_an_error_at_its_path(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "pl"
    shutil.copytree(ROOT / "recipes" / "style-transfer", folder)
    spec = json.loads((folder / "pipeline.json").read_text())
    index = next(i for i, s in enumerate(spec["steps"]) if "job" in s)
    spec["steps"][index]["job"] = ""
    (folder / "pipeline.json").write_text(json.dumps(spec))
    report = azbai.validate(folder / "pipeline.json")
    assert [(d.path, d.code) for d in report.errors] == [(f"steps[{index}].job", "empty")]
    with pytest.raises(azbai.SpecError):
        azbai.load(folder / "pipeline.json")
