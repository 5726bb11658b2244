"""v2 pipelines run locally (nodes in order, wired through storage, a parallel node by mini-batches), and what goes
wrong says so: bad YAML with azure-ai-ml's own path-pointing message, a missing datastore or compute by name, a failed
node stopping its dependants with its outputs and logs kept, ``limits.timeout`` enforced."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import azbai
from azbai.errors import MlError, MlJobFailed
from azbai.local.azurite import DEV_ACCOUNT
from azbai.local.pipelines import PipelineRunner
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace
from azbai.ml.runs import RunBook
from tests.conftest import DATA, ROOT
from tests.ml.conftest import register, run_v2

pytestmark = pytest.mark.azurite
PIPELINE = DATA / "pipeline"
WORDS = b"one two three four five\n"


@pytest.fixture(scope="module")
def words(ml_workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The words-parallel pipeline migrated to v2, its datastores and computes created, its scripts and input uploaded."""
    out = tmp_path_factory.mktemp("words")
    azbai.migrate(PIPELINE / "parallel.json", out, target="v2")
    register(ml_workspace, out / "v2")
    scripts = open_store(ml_workspace, DEV_ACCOUNT, share="scripts")
    for name in ("produce.py", "consume.py"):
        scripts.upload_file(PIPELINE / name, name)
    open_store(ml_workspace, DEV_ACCOUNT, container="inbox").write_bytes("incoming/words.txt", WORDS)
    yield out / "v2"


def joined(workspace: Workspace, segment_tail: str) -> str:
    (path,) = (workspace.root / "shares" / DEV_ACCOUNT / "logs").rglob(
        f"*/{segment_tail}/outputs/result/joined.txt"
    )
    return path.read_text()


def test_the_pipeline_runs_as_the_local_pipeline_engine_runs_it(ml_workspace: Workspace, words: Path) -> None:
    seen: list[tuple[str, str]] = []
    run = run_v2(
        ml_workspace, words / "pipeline.yml", progress=lambda node, status: seen.append((node, status))
    )
    assert run.status == "Completed"
    assert [n for n, s in seen if s == "Completed"] == ["produce", "shout", "consume"]
    book = RunBook(ml_workspace)
    shout = book.get(run.children["shout"])
    assert shout.type == "parallel" and shout.outputs["loud"]["uri"].startswith(
        "azureml://datastores/workspaceblobstore/"
    )
    state = json.loads((shout.path / "parallel_state/summary.json").read_text())
    assert (state["done_batches"], state["done_items"], state["retries"]) == (
        3,
        5,
        0,
    )  # 5 words, batches of 2
    # the same pipeline file, run by azbai pipeline run, joins the same words
    reference = PipelineRunner(
        ml_workspace, azbai.load(PIPELINE / "parallel.json"), PIPELINE, reuse=False
    ).run()
    expected = joined(ml_workspace, f"{reference.run_id}-consume/*")
    assert (
        joined(ml_workspace, run.children["consume"])
        == expected
        == "".join(f"HELLO {w.upper()}hello\n" for w in WORDS.decode().split())
    )


def test_a_failed_node_stops_its_dependants_and_keeps_what_it_wrote(
    ml_workspace: Workspace, words: Path, tmp_path: Path
) -> None:
    failing = tmp_path / "produce.py"
    failing.write_text(
        "import os, sys\nopen(os.path.join(sys.argv[2], 'partial.txt'), 'w').write('half')\n"
        "print('giving up', file=sys.stderr)\nsys.exit(7)\n"
    )
    open_store(ml_workspace, DEV_ACCOUNT, share="scripts").upload_file(failing, "produce.py")
    try:
        with pytest.raises(
            MlJobFailed, match=r"node 'produce' failed \(exit code 7\).*not started: shout, consume"
        ):
            run_v2(ml_workspace, words / "pipeline.yml", name="fails")
    finally:
        open_store(ml_workspace, DEV_ACCOUNT, share="scripts").upload_file(
            PIPELINE / "produce.py", "produce.py"
        )
    run = RunBook(ml_workspace).get("fails")
    assert run.status == "Failed" and list(run.children) == ["produce"]
    produce = RunBook(ml_workspace).get(run.children["produce"])
    words_out = open_store(ml_workspace, DEV_ACCOUNT, container="workspaceblobstore")
    assert words_out.read_bytes(f"azureml/{produce.name}/words/partial.txt") == b"half"
    assert "giving up" in (produce.logs_dir / "std_log.txt").read_text()
    stderr = list(
        (ml_workspace.root / "shares" / DEV_ACCOUNT / "logs").rglob(f"*/{produce.name}/stdouterr/stderr.txt")
    )
    assert stderr and "giving up" in stderr[0].read_text()


def test_limits_timeout_stops_the_job_and_uploads_its_logs(ml_workspace: Workspace, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"properties": {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": "echo started; sleep 60"},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
        "mountVolumes": {"azureFileShares": [
            {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs", "relativeMountPath": "logs"}
        ]},
    }}))  # fmt: skip
    azbai.migrate(job, tmp_path / "out", target="v2", name="sleeper")
    register(ml_workspace, tmp_path / "out/v2")
    with pytest.raises(MlJobFailed, match=r"limits.timeout \(2 s\) exceeded"):
        run_v2(ml_workspace, tmp_path / "out/v2/job.yml", sets={"limits.timeout": "2"}, name="sleeper")
    run = RunBook(ml_workspace).get("sleeper")
    assert (run.status, run.exit_code) == ("Failed", 124)
    stdout = list(
        (ml_workspace.root / "shares" / DEV_ACCOUNT / "logs").rglob("*/sleeper/stdouterr/stdout.txt")
    )
    assert stdout and stdout[0].read_text() == "started\n"


def test_bad_yaml_gets_azure_ai_ml_s_message_pointing_at_the_field(
    ml_workspace: Workspace, tmp_path: Path
) -> None:
    bad = tmp_path / "job.yml"
    bad.write_text(
        "type: command\ncommand: echo hi\nenvironment: {image: python}\nresources: {instance_cont: 2}\n"
    )
    with pytest.raises(MlError) as caught:
        run_v2(ml_workspace, bad)
    message = str(caught.value)
    assert str(bad) in message and "instance_cont" in message and "Unknown field" in message


def test_a_missing_datastore_or_compute_is_named(tmp_path: Path, words: Path) -> None:
    from azbai.ml.registry import Registry

    bare = Workspace(tmp_path / "bare")
    with pytest.raises(MlError, match=r"compute 'cpu-cluster' does not exist.*azbai ml compute create"):
        run_v2(bare, words / "pipeline.yml")
    for file in (words / "computes").glob("*.yml"):
        Registry(bare).create_compute(file)
    with pytest.raises(MlError, match=r"datastore '\w+' does not exist.*azbai ml datastore create"):
        run_v2(bare, words / "pipeline.yml")
    assert not (bare.root / "ml" / "jobs").exists()  # nothing recorded, nothing started
    assert not bare.azurite_state.exists()


def test_the_cli_creates_and_streams_a_job(ml_workspace: Workspace, words: Path) -> None:
    env = {**os.environ, "AZBAI_WORKSPACE": str(ml_workspace.root), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "azbai", "ml", "job", "create", "-f", str(words / "pipeline.yml"), "--stream"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "produced 5 words" in result.stdout and "joined 5 words" in result.stdout
    name = json.loads(result.stdout.splitlines()[0])["name"]
    shown = subprocess.run(
        [sys.executable, "-m", "azbai", "ml", "job", "show", "-n", name],
        capture_output=True,
        text=True,
        env=env,
    )
    assert json.loads(shown.stdout)["status"] == "Completed"
    assert "experimental class" not in result.stderr


def test_pipeline_py_local_runs_the_sdk_v1_pipeline_with_its_parallel_step(
    ml_workspace: Workspace, tmp_path: Path
) -> None:
    """``python pipeline.py --local``: the built PythonScriptStep/ParallelRunStep graph, its DataReferences,
    DataPath parameter and OutputFileDatasetConfigs, joining the same words as ``azbai pipeline run``."""
    azbai.migrate(PIPELINE / "parallel.json", tmp_path / "v1", target="v1")
    env = {**os.environ, "AZBAI_WORKSPACE": str(ml_workspace.root), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "v1/pipeline.py"), "--local"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert re.findall(r"^(\w+): Completed", result.stdout, re.M) == ["produce", "shout", "consume"]
    (pipeline,) = [r for r in RunBook(ml_workspace).list() if r.experiment == "local-v1"]
    book = RunBook(ml_workspace)
    consume = book.get(pipeline.children["consume"])
    assert joined(ml_workspace, consume.name) == "".join(
        f"HELLO {w.upper()}hello\n" for w in WORDS.decode().split()
    )
    shout = book.get(pipeline.children["shout"])
    assert (
        shout.outputs["loud"]["uri"]
        == f"azureml://datastores/workspaceblobstore/paths/dataset/{shout.name}/loud"
    )
    produce = book.get(pipeline.children["produce"])
    assert set(produce.inputs) == {"text"} and produce.inputs["text"]["mode"] == "download"
    assert produce.outputs["logs"]["mode"] == "rw_mount"  # a v1 DataReference mount is read-write
