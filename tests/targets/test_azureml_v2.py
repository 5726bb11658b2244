"""The plan as Azure ML SDK v2 / CLI v2 files, loaded and validated by azure-ai-ml itself, and compared with the plan.

Every runnable job of the Batch AI corpus is migrated with ``--target all``; each written ``v2/`` folder is loaded
with azure-ai-ml's loaders from another working directory (``build_entities``: ``validate_job``, the entity's
``_validate()``, its REST object, dump → load → equal, the file traps), then held to the plan field by field.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import azbai
from azbai.convert.job import build_plan
from azbai.errors import TargetError
from azbai.facade import render_files
from azbai.fsutil import write_tree
from azbai.launcher import EXIT_LAUNCHER_ERROR, resolve_segment
from azbai.plan.model import DataMode, Distribution, Plan, Step
from azbai.plan.serialize import job_to_json
from azbai.source.reader import load_job
from azbai.targets.azureml_v2 import build_entities, plan_entities
from azbai.targets.azureml_v2 import render as v2
from azbai.targets.azureml_v2.entities import check_files
from azbai.targets.azureml_v2.files import OFFLINE_WORKSPACE
from azbai.targets.azureml_v2.yaml_text import Folded, dump
from tests.conftest import CORPUS, DATA, ROOT, corpus_files, corpus_id
from tests.source.test_corpus import FRAGMENTS, INVALID_JSON

RUNNABLE = [p for p in corpus_files("job") if corpus_id(p) not in {*INVALID_JSON, *FRAGMENTS}]
GOLDEN = DATA / "golden" / "v2"
BAD = DATA / "bad" / "v2"
CLUSTER_DOCS = CORPUS / "doc-examples/documentation/using-azure-cli-20"


@pytest.fixture(scope="module")
def aml() -> Any:
    """azure-ai-ml, imported once for the module (~2 s)."""
    return pytest.importorskip("azure.ai.ml")


def migrate_v2(plan: Plan, directory: Path, base_dir: Path | None = None) -> Path:
    """Write the migration with --target all (v1 and v2 side by side); returns the output directory."""
    write_tree(directory, render_files(plan, base_dir, target="all"))
    return directory


def filled(path: str) -> str:
    """A datastore path as submit.py --dry-run fills it: the offline workspace in, the uuid left to Azure ML."""
    for key, value in OFFLINE_WORKSPACE.items():
        path = path.replace("{" + key + "}", value)
    return path


def expected_data(plan: Plan, step: Step) -> dict[str, tuple[str, str, str]]:
    """name → (inputs|outputs, mode, datastore URI): the plan's data references, by the v2 mapping table."""
    job = step.job
    written = v2.written_volumes(job)
    volume_of = {v.data_reference: v.name for v in job.volumes if v.data_reference}
    segment = job.segment_template.format(
        subscription=OFFLINE_WORKSPACE["subscription"], resource_group=OFFLINE_WORKSPACE["resource_group"],
        workspace=OFFLINE_WORKSPACE["workspace"], experiment=plan.experiment, job=plan.name, job_uuid="${{name}}",
    )  # fmt: skip
    expected = {}
    references = {r.name for r in plan.data_references}
    for name in (n for n in step.data_references if n in references):  # not pipeline data or parameters
        ref = plan.data_reference(name)
        uri = f"azureml://datastores/{ref.datastore}/paths/{ref.path_on_datastore.replace('{segment}', segment)}"
        uri = uri.rstrip("/") if ref.path_on_datastore else uri
        if ref.mode is DataMode.UPLOAD:
            expected[v2.ident(name)] = ("outputs", "upload", uri)
        elif ref.mode is DataMode.DOWNLOAD:
            expected[v2.ident(name)] = ("inputs", "download", uri)
        elif volume_of.get(name) in written:
            expected[v2.ident(name)] = ("outputs", "rw_mount", uri)
        else:
            expected[v2.ident(name)] = ("inputs", "ro_mount", uri)
    return expected


def assert_job_matches_plan(job: Any, plan: Plan) -> None:
    """The loaded command job, field by field against the plan."""
    step = plan.job_steps[0]
    launch = step.job.launch
    assert job.type == "command"
    assert job.compute == plan.compute.name
    assert job.experiment_name == plan.experiment
    assert job.resources.instance_count == launch.node_count == step.job.node_count
    data = expected_data(plan, step)
    actual = {n: ("inputs", i.mode, i.path) for n, i in job.inputs.items()}
    actual |= {n: ("outputs", o.mode, o.path) for n, o in job.outputs.items()}
    assert actual == data
    # every data reference reaches the launcher by name, with the path Azure ML substitutes
    words = job.command.split()
    for name, (direction, _, _) in data.items():
        reference = next(r for r in step.data_references if v2.ident(r) == name)
        at = words.index(f"${{{{{direction}.{name}}}}}")
        assert words[at - 2 : at] == ["--data", reference]
    assert words[:5] == ["python", "azbai_launcher.py", "--job", "azbai_job.json", "--segment"]
    per_node = -(-launch.process_count // launch.node_count)
    if launch.distribution is Distribution.NONE:
        assert job.distribution is None and "--ranks" not in words
    else:
        assert words[words.index("--ranks") + 1] == "external"
        assert job.distribution.type == launch.distribution.value
        if launch.distribution is Distribution.TENSORFLOW:
            counts = {g.role: g.count for g in launch.groups}
            assert job.distribution.worker_count == counts.get("worker", 1)
            assert job.distribution.parameter_server_count == counts.get("ps", 1)
        else:
            assert job.distribution.process_count_per_instance == per_node
    assert (job.limits.timeout if job.limits else None) == step.job.max_wall_clock_seconds
    assert dict(job.environment_variables) == {v.name: v.value for v in step.job.environment_variables}
    container = step.container or plan.container
    assert job.environment.image == container.image
    if not container.own_image:
        pip = job.environment.conda_file["dependencies"][-1]["pip"]
        assert set(container.pip_packages) <= set(pip)
    else:  # the job's own image, as it is
        assert job.environment.conda_file is None and container.source_image is None
    assert (job.identity is not None) == bool(step.job.secrets)


def assert_stores_and_computes_match(entities: dict[str, Any], plan: Plan) -> None:
    stores = {d.name: d for d in plan.datastores if not d.workspace_default}
    assert set(entities["datastores"]) == set(stores)
    for name, entity in entities["datastores"].items():
        store = stores[name]
        assert type(entity).__name__ == (
            "AzureBlobDatastore" if store.kind.value == "blob_container" else "AzureFileDatastore"
        )
        assert entity.account_name == store.account_name
        assert (getattr(entity, "container_name", None) or entity.file_share_name) == store.container_name
        assert type(entity.credentials).__name__ == "NoneCredentialConfiguration"
    computes = {c.name: c for c in (plan.compute, *plan.extra_computes)}
    assert set(entities["computes"]) == set(computes)
    for name, entity in entities["computes"].items():
        compute = computes[name]
        assert (entity.size, entity.min_instances, entity.max_instances) == (
            compute.vm_size, compute.min_nodes, compute.max_nodes,
        )  # fmt: skip
        assert entity.idle_time_before_scale_down == compute.idle_seconds_before_scaledown
        assert entity.tier == ("low_priority" if "low" in compute.vm_priority else "dedicated")


@pytest.mark.parametrize("path", RUNNABLE, ids=corpus_id)
def test_every_corpus_job_migrates_and_azure_ai_ml_validates_it(path: Path, tmp_path: Path, aml: Any) -> None:
    plan = build_plan(load_job(path))
    out = migrate_v2(plan, tmp_path / "out")
    assert (out / "pipeline.py").is_file() and (out / "v2/job.yml").is_file()  # v1 and v2 side by side
    entities = build_entities(
        out
    )  # from the tests' cwd, not the folder: relative paths resolve from the file
    assert_job_matches_plan(entities["job"], plan)
    assert_stores_and_computes_match(entities, plan)
    assert entities["schedule"] is None


def test_the_cntk_recipe_in_detail(tmp_path: Path, aml: Any) -> None:
    plan = azbai.load(ROOT / "recipes/cntk-mnist/job.json", storage_account="mystorage")
    entities = build_entities(migrate_v2(plan, tmp_path))
    job = entities["job"]
    # every volume was read-write on Batch AI, and the job names each (the script, its data, the logs prefix)
    assert job.inputs == {}
    assert {n: o.mode for n, o in job.outputs.items()} == {
        "logs": "rw_mount", "scripts": "rw_mount", "data": "rw_mount", "output_model": "upload",
    }  # fmt: skip
    assert job.outputs["output_model"].path == (
        "azureml://datastores/logs_share/paths/00000000-0000-0000-0000-000000000000/offline/workspaces/offline/"
        "experiments/batchai-migration/jobs/cntk-mnist/${{name}}/outputs"
    )
    assert (
        "--segment '{subscription}/{resource_group}/workspaces/{workspace}/experiments/batchai-migration/"
        in (job.command)
    )
    assert entities["datastores"]["data_blob"].container_name == "data"
    assert entities["datastores"]["logs_share"].account_name == "mystorage"
    assert entities["computes"]["gpu-cluster"].size == "STANDARD_NC4AS_T4_V3"
    # the snapshot the job's code: points at is v1's, holding the launcher and the job section
    assert json.loads((tmp_path / "snapshot/azbai_job.json").read_text())["name"] == "cntk-mnist"
    compute_file = (tmp_path / "v2/computes/gpu-cluster.yml").read_text()
    assert "Batch AI ran on STANDARD_NC6, which Azure retired" in compute_file


def test_distributions_and_secrets(tmp_path: Path, aml: Any) -> None:
    cases = {
        "recipes/TensorFlow/TensorFlow-GPU-Distributed/job.json": ("tensorflow", 2),
        "recipes/Horovod/Horovod-Infiniband-Benchmark/job.json": ("mpi", 2),
        "recipes/PyTorch/PyTorch-GPU-Distributed-Gloo/job.json": ("pytorch", 2),
    }
    for index, (name, (kind, nodes)) in enumerate(cases.items()):
        plan = build_plan(load_job(CORPUS / name))
        job = build_entities(migrate_v2(plan, tmp_path / str(index)))["job"]
        assert (job.distribution.type, job.resources.instance_count) == (kind, nodes)
        if kind == "mpi":  # processCount 8 on 2 nodes
            assert job.distribution.process_count_per_instance == 4
    plan = azbai.load(
        CLUSTER_DOCS / "block55.job.json",
        cluster=CLUSTER_DOCS / "block29.cluster.json",
        name="with-secrets",
    )
    entities = plan_entities(plan, directory=tmp_path / "secrets")  # a plan's entities, for notebooks
    assert (tmp_path / "secrets/v2/job.yml").is_file() and not (tmp_path / "secrets/pipeline.py").exists()
    assert type(entities["job"].identity).__name__ == "ManagedIdentityConfiguration"
    module = entities["module"]
    assert [s[0] for s in module.SECRETS] == ["ENVIRONMENT_VARIABLE_3", "ENVIRONMENT_VARIABLE_4"]
    # submit.py tells the launcher where the vault is; no file does
    job = module.load_the_job(OFFLINE_WORKSPACE, "https://vault.example/")
    assert job.environment_variables["AZBAI_KEY_VAULT_URL"] == "https://vault.example/"
    assert "azure-keyvault-secrets" in job.environment.conda_file["dependencies"][-1]["pip"]
    for compute in entities["computes"].values():
        assert compute.identity.type == "system_assigned"


# --- golden files ---------------------------------------------------------------------------------------------

GOLDEN_CASES = {
    "cntk-mnist": lambda: azbai.load(ROOT / "recipes/cntk-mnist/job.json"),
    "style-batch": lambda: azbai.load(
        ROOT / "recipes/style-transfer/batch.job.json",
        cluster=ROOT / "recipes/style-transfer/cluster.json",
    ),
    "tensorflow-ps": lambda: azbai.load(CORPUS / "recipes/TensorFlow/TensorFlow-GPU-Distributed/job.json"),
    "pytorch-gloo": lambda: azbai.load(CORPUS / "recipes/PyTorch/PyTorch-GPU-Distributed-Gloo/job.json"),
    "with-secrets-download": lambda: azbai.load(
        CLUSTER_DOCS / "block55.job.json",
        cluster=CLUSTER_DOCS / "block29.cluster.json",
        mounts=["external=afs://mystorage/external"],
        storage_account="mystorage",
        inputs="download",
        name="cntk-external",
    ),
}


def check_golden(name: str, files: dict[str, str | bytes], update: bool) -> None:
    """Every file of v2/ against tests/data/golden/v2/<name>/ (``pytest --update-golden`` rewrites them)."""
    folder = GOLDEN / name
    rendered = {k[len("v2/") :]: v for k, v in files.items() if k.startswith("v2/")}
    if update:
        for relative, text in rendered.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(str(text))
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(
        rendered
    )
    for relative, text in rendered.items():
        assert text == (folder / relative).read_text(), f"v2/{name}/{relative} differs from the golden file"


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_v2_golden(name: str, update_golden: bool) -> None:
    check_golden(name, render_files(GOLDEN_CASES[name](), target="v2"), update_golden)


def test_generated_submit_py_is_formatted_and_clean() -> None:
    scripts = sorted(str(p) for p in GOLDEN.rglob("submit.py"))
    assert len(scripts) >= len(GOLDEN_CASES)
    ruff = [sys.executable, "-m", "ruff"]
    options = ["--isolated", "--line-length", "110"]
    formatted = subprocess.run(
        [*ruff, "format", "--check", *options, *scripts], capture_output=True, text=True
    )
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    checked = subprocess.run([*ruff, "check", *options, *scripts], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- bad cases: what azure-ai-ml and the trap checks reject, golden ---------------------------------------------

#: case → (file in v2/, text to replace, replacement); the expected diagnostic is tests/data/bad/v2/<case>.expected
BAD_CASES = {
    "output_mode_download": ("job.yml", "mode: upload", "mode: download"),
    "typo_field": ("job.yml", "instance_count", "instance_cont"),
    "undeclared_input": ("job.yml", "${{outputs.data}}", "${{inputs.dataset}}"),
    "missing_code": ("job.yml", "code: ../snapshot", "code: ../no_such_folder"),
    "absolute_code": ("job.yml", "code: ../snapshot", "code: __SNAPSHOT__"),
    "stringified_input": ("job.yml", "outputs:\n", "inputs:\n  epochs: \"{'type': 'integer', 'default': 10}\"\noutputs:\n"),
    "timeout_string": ("job.yml", "resources:\n", "limits:\n  timeout: 1 week\nresources:\n"),
    "credentials_in_datastore": ("datastores/data_blob.yml", "protocol: https\n", "protocol: https\ncredentials:\n  account_key: x\n"),
    "bad_tier": ("computes/gpu-cluster.yml", "tier: dedicated", "tier: spot"),
}  # fmt: skip


@pytest.fixture(scope="module")
def cntk_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cntk")
    write_tree(out, render_files(azbai.load(ROOT / "recipes/cntk-mnist/job.json"), target="v2"))
    return out


def test_building_the_entities_logs_no_experimental_class_lines(
    cntk_v2: Path, aml: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """azure-ai-ml logs 'Class X: This is an experimental class' as its schemas load; in a notebook, and among the
    `name: value` lines `make bench` prints, they are noise (and read as figures)."""
    from azure.ai.ml._utils import _experimental

    _experimental._warning_cache.clear()  # each line is logged once a process: an earlier test may have spent it
    with caplog.at_level(logging.DEBUG):
        build_entities(cntk_v2)
    assert [r.getMessage() for r in caplog.records if "experimental" in r.getMessage()] == []


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_v2_files_are_rejected_golden(
    case: str, cntk_v2: Path, tmp_path: Path, aml: Any, update_golden: bool
) -> None:
    import shutil

    shutil.copytree(cntk_v2, tmp_path / "out")
    file, old, new = BAD_CASES[case]
    path = tmp_path / "out/v2" / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new.replace("__SNAPSHOT__", str(tmp_path / "out/snapshot")), 1))
    with pytest.raises(TargetError) as caught:
        build_entities(tmp_path / "out")
    message = str(caught.value).replace(str(tmp_path), "<tmp>")
    expected = BAD / f"{case}.expected"
    if update_golden:
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_text(diagnostic(message) + "\n")
    assert diagnostic(message) == expected.read_text().strip()


def diagnostic(message: str) -> str:
    """The problems of the message, one ``- path: problem`` a line (the first line names the folder)."""
    return "\n".join(line.strip() for line in message.splitlines()[1:])


def test_the_trap_checks_see_nothing_in_real_output(cntk_v2: Path) -> None:
    assert check_files(cntk_v2 / "v2") == []
    yaml = pytest.importorskip("yaml")

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        return {k for v in node for k in keys(v)} if isinstance(node, list) else set()

    for path in (cntk_v2 / "v2").rglob("*.yml"):
        assert not keys(yaml.safe_load(path.read_text())) & {"credentials", "account_key", "sas_token"}


# --- the migrate command and the public entry points -----------------------------------------------------------


def test_migrate_target_choices_and_no_sdk_import(tmp_path: Path) -> None:
    job = ROOT / "recipes/cntk-mnist/job.json"
    code = (
        "import sys\nimport azbai\n"
        f"azbai.migrate({str(job)!r}, {str(tmp_path / 'all')!r}, target='all')\n"
        "assert not any(m.startswith(('azure.ai.ml', 'azureml')) for m in sys.modules), 'an SDK was imported'\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert (tmp_path / "all/pipeline.py").is_file() and (tmp_path / "all/v2/submit.py").is_file()
    for target, present, absent in (("v1", "pipeline.py", "v2"), ("v2", "v2/job.yml", "pipeline.py")):
        result = subprocess.run(
            [sys.executable, "-m", "azbai", "migrate", str(job), "-o", str(tmp_path / target), "--target", target],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert (tmp_path / target / present).exists() and not (tmp_path / target / absent).exists()
        assert (tmp_path / target / "MIGRATION.md").is_file()
    wrong = subprocess.run(
        [sys.executable, "-m", "azbai", "migrate", str(job), "--target", "v3"], capture_output=True, text=True
    )
    assert wrong.returncode == 2 and "v3" in wrong.stderr


def test_submit_py_dry_run_is_a_real_command(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(
        out, render_files(azbai.load(CORPUS / "recipes/Horovod/Horovod-Tensorflow/job.json"), target="v2")
    )
    dry = subprocess.run(
        [sys.executable, str(out / "v2/submit.py"), "--dry-run", "--json"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    summary = json.loads(dry.stdout)
    assert summary["job"]["type"] == "command" and summary["job"]["distribution"] == "mpi"
    assert summary["computes"]["gpu-cluster"][0] == "STANDARD_NC4AS_T4_V3"
    submit = subprocess.run(
        [sys.executable, str(out / "v2/submit.py"), "--submit"], capture_output=True, text=True
    )
    assert submit.returncode == 2 and "--storage-account-name" in submit.stderr  # no file names the account


def test_migration_md_has_the_v2_column(tmp_path: Path) -> None:
    plan = azbai.load(ROOT / "recipes/cntk-mnist/job.json")
    report = render_files(plan, target="v2")["MIGRATION.md"]
    assert isinstance(report, str)
    assert "| Batch AI field | value | SDK v1 (pipeline.py) | SDK v2 / CLI v2 (v2/) |" in report
    assert "`rw_mount` output `data` on datastore `data_blob`" in report
    for gap in (
        "job preparation",
        "cluster-level mounts",
        "NFS",
        "datastore-path trigger",
        "TensorFlow",
        "registry",
    ):
        assert gap in report


# --- the pieces: the YAML emitter, the launcher's v2 side --------------------------------------------------------


@given(st.dictionaries(st.text(min_size=1), st.one_of(st.text(), st.integers(), st.booleans(), st.none())))
def test_the_yaml_emitter_round_trips_through_a_yaml_reader(document: dict[str, Any]) -> None:
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(dump({"x": document})) == {"x": document}


def test_tricky_scalars_and_folded_commands() -> None:
    yaml = pytest.importorskip("yaml")
    tricky = ["yes", "No", "on", "1.0", "1e3", "0x1f", "08", "12:30", "", " a", "a: b", "#x", "@x", "- x", "null",
              "${{inputs.x}}", "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "2026-07-01", "*", "!x", "a #b", "true"]  # fmt: skip
    assert yaml.safe_load(dump({"v": tricky})) == {"v": tricky}
    command = Folded(["python a.py --segment 'x/{run-id}'", "--data logs ${{outputs.logs}}"])
    text = dump({"command": command})
    assert text.startswith("command: >-\n")
    assert yaml.safe_load(text) == {
        "command": "python a.py --segment 'x/{run-id}' --data logs ${{outputs.logs}}"
    }
    spaced = Folded(["a  b", "c"])  # a folded block would lose the double blank: quoted instead
    assert yaml.safe_load(dump({"c": spaced})) == {"c": "a  b c"} and ">-" not in dump({"c": spaced})


def test_the_launcher_fills_the_workspace_into_the_segment() -> None:
    env = {
        "AZUREML_ARM_SUBSCRIPTION": "sub",
        "AZUREML_ARM_RESOURCEGROUP": "rg",
        "AZUREML_ARM_WORKSPACE_NAME": "ws",
        "AZUREML_RUN_ID": "job_42",
    }
    template = "{subscription}/{resource_group}/workspaces/{workspace}/experiments/e/jobs/j/{run-id}"
    assert resolve_segment(template, env) == "sub/rg/workspaces/ws/experiments/e/jobs/j/job_42"
    assert resolve_segment("{workspace}/x", {}) == "{workspace}/x"


def test_the_launcher_says_what_is_missing_for_key_vault_without_quoting_anything(tmp_path: Path) -> None:
    try:
        import azure.keyvault.secrets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("azure-keyvault-secrets is installed: the real client would need Azure")
    plan = azbai.load(CLUSTER_DOCS / "block55.job.json", cluster=CLUSTER_DOCS / "block29.cluster.json")
    (tmp_path / "job.json").write_text(job_to_json(plan.job_steps[0].job))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVIRONMENT_VARIABLE")}
    env["AZBAI_KEY_VAULT_URL"] = "https://v.vault.azure.net/"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "azbai/launcher.py"), "--job", str(tmp_path / "job.json"), "--segment", "s",
         "--work", str(tmp_path / "work"), "--ref", f"output_model={tmp_path / 'model'}"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == EXIT_LAUNCHER_ERROR
    assert (
        "secret 'ENVIRONMENT_VARIABLE_3': AZBAI_KEY_VAULT_URL is set but azure-keyvault-secrets and azure-identity "
        "are not installed in the job's environment" in proc.stderr
    )
    assert not (tmp_path / "work/jobs").exists() or not any((tmp_path / "work/jobs").rglob("stdout*.txt"))


def test_the_v2_command_runs_the_job_through_the_launcher(tmp_path: Path, aml: Any) -> None:
    """The command as Azure ML would run it: ``${{inputs.X}}``/``${{outputs.Y}}`` replaced by local folders."""
    job = {
        "properties": {
            "nodeCount": 1,
            "customToolkitSettings": {
                "commandLine": "python $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/run.py $AZ_BATCHAI_OUTPUT_MODEL"
            },
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
            "environmentVariables": [{"name": "MODE", "value": "train"}],
            "mountVolumes": {
                "azureFileShares": [
                    {"azureFileUrl": "https://acct.file.core.windows.net/logs", "relativeMountPath": "logs"},
                    {
                        "azureFileUrl": "https://acct.file.core.windows.net/scripts",
                        "relativeMountPath": "scripts",
                    },
                ]
            },
        }
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    plan = azbai.load(tmp_path / "job.json", name="v2run")
    entities = plan_entities(plan, directory=tmp_path / "out")
    command = entities["job"].command
    local = {"outputs.scripts": tmp_path / "scripts", "outputs.logs": tmp_path / "logs"}
    local["outputs.output_model"] = tmp_path / "model"
    for name, folder in local.items():
        folder.mkdir()
        command = command.replace(f"${{{{{name}}}}}", str(folder))
    assert "${{" not in command
    (tmp_path / "scripts/run.py").write_text(
        "import os, sys\nopen(os.path.join(sys.argv[1], 'model.txt'), 'w').write(os.environ['MODE'])\nprint('trained')\n"
    )
    env = {
        **os.environ, "AZUREML_RUN_ID": "job_1", "AZUREML_ARM_SUBSCRIPTION": "sub",
        "AZUREML_ARM_RESOURCEGROUP": "rg", "AZUREML_ARM_WORKSPACE_NAME": "ws",
        "AZ_BATCHAI_LAUNCHER_WORK": str(tmp_path / "work"),
    }  # fmt: skip
    snapshot = tmp_path / "out/snapshot"  # the job's code: folder, where Azure ML starts the command
    proc = subprocess.run(
        ["bash", "-c", command], cwd=snapshot, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "model/model.txt").read_text() == "train"
    segment = "sub/rg/workspaces/ws/experiments/batchai-migration/jobs/v2run/job_1"
    assert (tmp_path / "logs" / segment / "stdouterr/stdout.txt").read_text() == "trained\n"
    assert "trained" in proc.stdout  # --echo: the job's output is in the Azure ML log too


def test_a_volume_the_job_writes_into_is_writable(tmp_path: Path, aml: Any) -> None:
    """Batch AI volumes were read-write: one the job names (job preparation, command line, a variable, the mount
    root alone) is an ``rw_mount`` output; one it reaches only through an input directory stays ``ro_mount``."""
    files = {
        "afs": "https://acct.file.core.windows.net/share/dir",
        "cfg": "https://acct.file.core.windows.net/cfg",
        "ro": "https://acct.file.core.windows.net/readonly",
        "afs2": "https://acct.file.core.windows.net/afs2",
    }
    job = {
        "properties": {
            "nodeCount": 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/afs",
            "mountVolumes": {
                "azureFileShares": [{"azureFileUrl": u, "relativeMountPath": n} for n, u in files.items()],
                "azureBlobFileSystems": [{"accountName": "acct", "containerName": "data", "relativeMountPath": "bfs"}],
            },
            "inputDirectories": [{"id": "DATA", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/ro/mnist"}],
            "environmentVariables": [{"name": "CONFIG", "value": "${AZ_BATCHAI_JOB_MOUNT_ROOT}/cfg/run.ini"}],
            "customToolkitSettings": {
                "commandLine": "python $AZ_BATCHAI_JOB_MOUNT_ROOT/afs/train.py --checkpoint_dir $AZ_BATCHAI_JOB_MOUNT_ROOT/bfs/checkpoints"
            },
            "jobPreparation": {"commandLine": "mkdir -p $AZ_BATCHAI_JOB_MOUNT_ROOT/bfs/checkpoints"},
        }
    }  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(job))
    plan = azbai.load(tmp_path / "job.json", name="writes", storage_account="acct")
    entities = plan_entities(plan, directory=tmp_path / "out")
    loaded = entities["job"]
    assert {n: i.mode for n, i in loaded.inputs.items()} == {"ro": "ro_mount", "afs2": "ro_mount"}
    assert {n: o.mode for n, o in loaded.outputs.items()} == {
        "afs": "rw_mount",
        "cfg": "rw_mount",
        "bfs": "rw_mount",
    }
    assert loaded.outputs["bfs"].path == "azureml://datastores/data_blob/paths/"
    assert_job_matches_plan(loaded, plan)
    text = (tmp_path / "out/v2/job.yml").read_text()
    assert "# bfs: read-write on Batch AI, and its command line names it: rw_mount" in text
    assert "# cfg: read-write on Batch AI, and the variable CONFIG names it: rw_mount" in text
    assert "`rw_mount` output `bfs` on datastore `data_blob`" in str(
        render_files(plan, target="v2")["MIGRATION.md"]
    )
    # only the job preparation writes there; a mount root named alone reaches every volume under it
    for command, writable in (("ls", set()), ("cd $AZ_BATCHAI_JOB_MOUNT_ROOT && ls", {"ro", "afs2", "bfs"})):
        job["properties"]["customToolkitSettings"]["commandLine"] = command
        job["properties"]["jobPreparation"]["commandLine"] = "touch $AZ_BATCHAI_JOB_MOUNT_ROOT/bfs"
        (tmp_path / "job.json").write_text(json.dumps(job))
        step = azbai.load(tmp_path / "job.json", name="writes", storage_account="acct").job_steps[0]
        assert v2.written_volumes(step.job) == {"afs", "cfg", "bfs"} | writable


def test_the_jobs_own_image_gets_no_conda_file(tmp_path: Path, aml: Any) -> None:
    """A conda environment would put python=3.10 in front of the image's own Python (horovod in myreg's image):
    the user's image (custom, or kept with --keep-image) is used as it is; azbai's base image takes the conda file."""
    job = {
        "properties": {
            "nodeCount": 2,
            "horovodSettings": {"pythonScriptFilePath": "$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/a.py", "processCount": 8},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/afs",
            "mountVolumes": {
                "azureFileShares": [{"azureFileUrl": "https://acct.file.core.windows.net/share", "relativeMountPath": "afs"}]
            },
            "containerSettings": {"imageSourceRegistry": {"image": "myreg.azurecr.io/img:1"}},
        }
    }  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(job))
    cntk = ROOT / "recipes/cntk-mnist/job.json"  # a retired image
    cases = {
        "custom": (azbai.load(tmp_path / "job.json", name="hvd"), False),
        "kept": (azbai.load(cntk, keep_image=True), False),
        "replaced": (azbai.load(cntk), True),
    }
    for name, (plan, conda) in cases.items():
        out = tmp_path / name
        loaded = build_entities(migrate_v2(plan, out))["job"]
        text = (out / "v2/job.yml").read_text()
        assert (loaded.environment.conda_file is not None) == conda == ("conda_file:" in text), name
        assert_job_matches_plan(loaded, plan)
        if not conda:
            assert loaded.environment.image == (plan.job_steps[0].container or plan.container).image
            assert "it must have python3" in text
            environment = yaml_load(text)["environment"]
            assert environment == {"image": loaded.environment.image}
            (out / "env.yml").write_text(dump({"name": "own", **environment}))
            assert aml.load_environment(out / "env.yml").image == loaded.environment.image
    assert cases["custom"][0].container.image == "myreg.azurecr.io/img:1"


def yaml_load(text: str) -> Any:
    return pytest.importorskip("yaml").safe_load(text)


def test_two_names_that_become_one_v2_name_are_an_error() -> None:
    io = v2.StepIO([v2.Binding("out_a", "out-a", "outputs", {}), v2.Binding("out_a", "out_a", "inputs", {})])
    with pytest.raises(TargetError, match="'out-a' and 'out_a' both become the Azure ML v2 name 'out_a'"):
        v2.check_unique(io, "train")
    assert v2.check_unique(v2.StepIO([v2.Binding("a", "a", "inputs", {})], ["b"]), "train").params == ["b"]
