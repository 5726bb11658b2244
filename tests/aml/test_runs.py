"""Estimators, ScriptRunConfigs and Batch AI jobs submitted to the local workspace: real Azurite, real processes."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from azbai.aml import (
    DataReference,
    DataReferenceConfiguration,
    Datastore,
    Estimator,
    Experiment,
    MpiConfiguration,
    ScriptRunConfig,
    Workspace,
)
from azbai.aml.run import job_status
from azbai.errors import JobFailed, PlanError, StorageError
from azbai.facade import load
from azbai.local.jobs import JobBook, JobRecord
from tests.aml.conftest import unique, write

pytestmark = pytest.mark.azurite

REPORT = """
    import json, os, pathlib, sys
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    data, notes, model = (pathlib.Path(args[k]) for k in ("--data", "--notes", "--model"))
    report = {
        "args": args,
        "env": {k: v for k, v in os.environ.items() if k.startswith("AZUREML_DATAREFERENCE_")},
        "cwd": os.getcwd(),
        "greeting": os.environ.get("GREETING"),
        "data": sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()),
        "notes": sorted(p.name for p in notes.iterdir()),
        "lr": args["--lr"],
    }
    (notes / "seen.txt").write_text("the run was here\\n")
    (model / "model.txt").write_text("%d files\\n" % len(report["data"]))
    pathlib.Path("outputs").mkdir(exist_ok=True)
    pathlib.Path("outputs/report.json").write_text(json.dumps(report))
    print("trained", flush=True)
    print("a line on stderr", file=sys.stderr)
"""


@pytest.fixture
def stores(ws: Workspace, tmp_path: Path) -> dict[str, Any]:
    """A blob container with training data and notes, and a file share for models."""
    data = Datastore.register_azure_blob_container(ws, unique("data"), unique(), "devstoreaccount1")
    models = Datastore.register_azure_file_share(ws, unique("models"), unique(), "devstoreaccount1")
    write(tmp_path / "mnist" / "train" / "0.txt", "zero\n")
    write(tmp_path / "mnist" / "test.txt", "test\n")
    data.upload(tmp_path / "mnist", target_path="mnist", show_progress=False)
    data.upload_files(
        [write(tmp_path / "notes" / "old.txt", "old\n")], target_path="notes", show_progress=False
    )
    return {"data": data, "models": models}


def test_an_estimator_gets_mount_download_and_upload(
    ws: Workspace, stores: dict[str, Any], tmp_path: Path
) -> None:
    data, models = stores["data"], stores["models"]
    source = tmp_path / "src"
    write(source / "train.py", REPORT)
    estimator = Estimator(
        source,
        "train.py",
        script_params={
            "--data": data.path("mnist", data_reference_name="mnist").as_download(),
            "--notes": data.path("notes", data_reference_name="notes").as_mount(),
            "--model": models.path("model", data_reference_name="model").as_upload(),
            "--lr": 0.5,
        },
        compute_target="cpu-cluster",
        environment_variables={"GREETING": "hi there"},
    )
    run = Experiment(ws, "how-to").submit(estimator)
    assert run.get_status() in ("Queued", "Preparing", "Running", "Finalizing", "Completed")
    details = run.wait_for_completion()
    assert details["status"] == "Completed" == run.get_status() and details["target"] == "cpu-cluster"
    assert {n: r["mode"] for n, r in details["runDefinition"]["dataReferences"].items()} == {
        "mnist": "download",
        "notes": "mount",
        "model": "upload",
    }

    assert sorted(run.get_file_names()) == sorted(
        [f for f in run.get_file_names() if f.startswith("azureml-logs/execution-")]
        + ["azureml-logs/stderr.txt", "azureml-logs/stdout.txt", "outputs/report.json"]
    )
    report = json.loads(run.download_file("outputs/report.json", tmp_path / "got").read_text())
    for flag, name in (("--data", "mnist"), ("--notes", "notes"), ("--model", "model")):
        assert report["args"][flag] == report["env"][f"AZUREML_DATAREFERENCE_{name}"]
        assert Path(report["args"][flag]).is_absolute()
    assert report["data"] == ["test.txt", "train/0.txt"]
    # the runner's blob mirror keeps its MD5 cache beside the files (a blobfuse mount would not show it)
    assert [n for n in report["notes"] if not n.startswith(".azbai-")] == ["old.txt"]
    assert report["greeting"] == "hi there" and report["lr"] == "0.5"
    assert Path(report["cwd"]).name == "snapshot" and Path(report["cwd"]) != source  # a snapshot copy
    run.download_file("azureml-logs/stdout.txt", tmp_path)
    assert (tmp_path / "stdout.txt").read_text() == "trained\n"

    assert models.store().read_bytes("model/model.txt") == b"2 files\n"  # uploaded after the run
    assert data.store().read_bytes("notes/seen.txt") == b"the run was here\n"  # the mount was written back
    record = JobBook(ws.local_workspace()).get(run.id, "how-to")  # the same job `azbai job show` shows
    assert record.state == "succeeded" and record.tool_type == "custom"


def test_a_failed_run_still_uploads_and_reports(
    ws: Workspace, stores: dict[str, Any], tmp_path: Path
) -> None:
    models = stores["models"]
    write(
        tmp_path / "src" / "fail.py",
        """
        import pathlib, sys
        pathlib.Path(sys.argv[1], "partial.txt").write_text("half\\n")
        sys.exit(3)
        """,
    )
    out = models.path("partial", data_reference_name="out").as_upload()
    run = Experiment(ws, "how-to").submit(ScriptRunConfig(tmp_path / "src", "fail.py", arguments=[out]))
    with pytest.raises(JobFailed, match="is Failed with exit code 3") as failure:
        run.wait_for_completion()
    assert failure.value.exit_code == 3
    assert run.wait_for_completion(raise_on_error=False)["exitCode"] == 3
    assert run.get_status() == "Failed"
    assert models.store().read_bytes("partial/partial.txt") == b"half\n"


def test_a_script_run_on_two_nodes_with_references_in_text(
    ws: Workspace, stores: dict[str, Any], tmp_path: Path
) -> None:
    data = stores["data"]
    write(
        tmp_path / "src" / "rank.py",
        """
        import os, pathlib, sys
        path = sys.argv[1].split("=", 1)[1]
        assert path == os.environ["AZUREML_DATAREFERENCE_mnist"] + "/train", (path, os.environ)
        rank, size = os.environ["OMPI_COMM_WORLD_RANK"], os.environ["OMPI_COMM_WORLD_SIZE"]
        # one write per line: the ranks share stdout.txt, as under Batch AI's MPI toolkits
        sys.stdout.write(f"rank {rank} of {size} {sorted(os.listdir(path))}\\n")
        sys.stdout.flush()
        """,
    )
    ref = data.path("mnist", data_reference_name="mnist").as_download()
    config = ScriptRunConfig(
        tmp_path / "src",
        "rank.py",
        arguments=[f"--data={ref}/train"],
        distributed_job_config=MpiConfiguration(process_count_per_node=1, node_count=2),
    )
    config.run_config.data_references = {ref.data_reference_name: ref.to_config()}  # as the how-to does
    assert config.node_count == 2
    run = Experiment(ws, "how-to").submit(config)
    shown = io.StringIO()
    run.wait_for_completion(show_output=True, output=shown)
    lines = sorted(line for line in shown.getvalue().splitlines() if line.startswith("rank"))
    assert lines == ["rank 0 of 2 ['0.txt']", "rank 1 of 2 ['0.txt']"]
    assert run.get_details()["runDefinition"]["nodeCount"] == 2


def test_cancel_stops_the_run_and_keeps_its_output(
    ws: Workspace, stores: dict[str, Any], tmp_path: Path
) -> None:
    write(
        tmp_path / "src" / "slow.py",
        """
        import pathlib, sys, time
        pathlib.Path(sys.argv[1], "started.txt").write_text("yes\\n")
        print("started", flush=True)
        time.sleep(120)
        """,
    )
    models = stores["models"]
    config = ScriptRunConfig(tmp_path / "src", "slow.py", arguments=[models.path("slow").as_upload()])
    run = Experiment(ws, "how-to").submit(config)
    deadline = time.monotonic() + 60
    while "started" not in _stdout(run) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.get_status() == "Running"
    run.cancel()
    assert run.get_status() == "Canceled"
    assert models.store().read_bytes("slow/started.txt") == b"yes\n"


def test_a_batch_ai_job_runs_through_the_launcher(ws: Workspace, tmp_path: Path) -> None:
    job = {
        "properties": {
            "nodeCount": 1,
            "customToolkitSettings": {
                "commandLine": "echo hello from batch ai && echo m > $AZ_BATCHAI_OUTPUT_MODEL/m.txt"
            },
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
            "mountVolumes": {
                "azureFileShares": [
                    {
                        "azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs",
                        "relativeMountPath": "logs",
                    }
                ]
            },
        }
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    run = Experiment(ws, "batchai").submit(load(path))
    assert run.wait_for_completion()["status"] == "Completed"
    assert "outputs/MODEL/m.txt" in run.get_file_names()
    definition = run.get_details()["runDefinition"]
    assert (definition["batchAiJob"], definition["toolkit"], definition["nodeCount"]) == (
        "job.json",
        "custom",
        1,
    )
    assert sorted(r["mode"] for r in definition["dataReferences"].values()) == [
        "mount",
        "upload",
    ]  # logs, MODEL
    assert "hello from batch ai" in _stdout(run)
    with pytest.raises(PlanError, match="single job"):
        Experiment(ws, "batchai").submit(load(path), pipeline_parameters={"x": "1"})


def test_bad_submissions_say_what_is_wrong(ws: Workspace, tmp_path: Path) -> None:
    write(tmp_path / "src" / "ok.py", "print('ok')\n")
    experiment = Experiment(ws, "bad")
    unknown = ScriptRunConfig(tmp_path / "src", "ok.py", arguments=["$AZUREML_DATAREFERENCE_nope"])
    with pytest.raises(PlanError, match="names data reference 'nope', which the run does not have"):
        experiment.submit(unknown)
    elsewhere = ScriptRunConfig(tmp_path / "src", "ok.py")
    elsewhere.run_config.data_references["x"] = DataReferenceConfiguration("nostore", "p", None, "mount")
    with pytest.raises(StorageError, match="no datastore 'nostore'"):
        experiment.submit(elsewhere)
    with pytest.raises(PlanError, match="is not a file of the source directory"):
        experiment.submit(Estimator(tmp_path / "src", "missing.py"))
    with pytest.raises(PlanError, match="not a directory"):
        experiment.submit(Estimator(tmp_path / "nowhere", "ok.py"))
    other = Workspace(tmp_path / "other")
    stranger = Datastore.register_azure_file_share(other, "stranger", "elsewhere", "devstoreaccount1")
    with pytest.raises(StorageError, match="no datastore 'stranger'"):
        experiment.submit(Estimator(tmp_path / "src", "ok.py", inputs=[stranger.as_mount()]))
    share = Datastore.get(ws, "workspacefilestore")
    clash = Estimator(
        tmp_path / "src",
        "ok.py",
        script_params={"--a": share.path("a", "same"), "--b": share.path("b", "same")},
    )
    with pytest.raises(PlanError, match="two different data references are named 'same'"):
        experiment.submit(clash)
    empty = Datastore.register_azure_blob_container(ws, unique("empty"), unique(), "devstoreaccount1")
    with pytest.raises(StorageError, match=r"downloads http://127\.0\.0\.1:\d+/devstoreaccount1/.*nothing"):
        experiment.submit(Estimator(tmp_path / "src", "ok.py", inputs=[empty.path("none").as_download()]))
    with pytest.raises(PlanError, match="pipeline_parameters are for pipelines"):
        experiment.submit(Estimator(tmp_path / "src", "ok.py"), pipeline_parameters={"a": "b"})
    assert not any((ws.local_workspace().jobs_dir / "bad").glob("*/record.json"))  # nothing half-made
    assert isinstance(share.path("a"), DataReference)


def _stdout(run: Any) -> str:
    path = run.get_details()["logFiles"].get("azureml-logs/stdout.txt")
    return Path(path).read_text() if path is not None else ""


def test_statuses_follow_the_local_job(tmp_path: Path) -> None:
    logs = tmp_path / "stdouterr"
    record = JobRecord(name="r", experiment="e", directory=str(tmp_path), state="queued")
    assert job_status(record) == "Queued"
    record.state = "running"
    assert job_status(record) == "Preparing"  # staging in: no log directory yet
    record.stdouterr_dir = str(logs)
    logs.mkdir()
    (logs / "execution-node-0-20261201t000000z.log").write_text(
        "job 'azureml' (custom …) running all ranks\n"
    )
    assert job_status(record) == "Running"
    with open(logs / "execution-node-0-20261201t000000z.log", "a") as log:
        log.write("job finished with exit code 0 after 1.0 s\n")
    assert job_status(record) == "Finalizing"  # staging out
    for state, status in (("succeeded", "Completed"), ("failed", "Failed"), ("terminated", "Canceled")):
        record.state = state
        assert job_status(record) == status
