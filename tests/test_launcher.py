"""The Batch AI compatibility launcher, run for real: job.json → plan → launcher → files and processes.

Most tests run a copy of the module as ``azbai_launcher.py`` with ``python -I -S`` (no site-packages: no azbai),
as Azure ML runs it from a snapshot. Job processes are the small scripts in ``tests/data/launcher/``.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from azbai import launcher
from azbai.convert.job import PlanOptions, build_plan
from azbai.plan.model import DataMode
from azbai.plan.serialize import job_to_json
from azbai.source.reader import load_job

DATA = Path(__file__).parent / "data" / "launcher"
PY = sys.executable
REPORT = f"{PY} {DATA / 'report_env.py'}"
SEGMENT = "sub/rg/workspaces/ws/experiments/exp/jobs/job/0123-uuid"
LOGS_SHARE = {
    "azureFileShares": [
        {
            "azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs",
            "relativeMountPath": "logs",
        }
    ]
}
FILE_SERVER = "/subscriptions/s/resourceGroups/r/providers/Microsoft.BatchAI/workspaces/w/fileservers/fs"
STAMP = r"\d{8}t\d{6}z"


def plan_job(tmp_path: Path, props: dict[str, Any], name: str = "job", **options: Any) -> dict[str, Any]:
    """Write a Batch AI job.json, load and plan it; the plan's job section, as the launcher reads it."""
    folder = tmp_path / "config" / name
    folder.mkdir(parents=True)
    props = {
        "nodeCount": 1,
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": LOGS_SHARE,
        **props,
    }
    (folder / "job.json").write_text(json.dumps({"properties": props}))
    plan = build_plan(load_job(folder / "job.json"), options=PlanOptions(**options))
    return json.loads(job_to_json(plan.steps[0].job))


def custom(command: str) -> dict[str, Any]:
    return {"customToolkitSettings": {"commandLine": command}}


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    work: Path
    share: Path
    seconds: float

    @property
    def stdouterr(self) -> Path:
        return self.share / SEGMENT / "stdouterr"

    @property
    def shared(self) -> Path:
        return self.work / "jobs" / "job" / "shared"

    def report(self, name: str) -> dict[str, Any]:
        return json.loads((self.shared / name).read_text())

    def text(self, name: str) -> str:
        return (self.stdouterr / name).read_text()

    def execution_log(self, node: str = "node-0") -> str:
        (path,) = self.stdouterr.glob(f"execution-{node}-*.log")
        assert re.fullmatch(f"execution-{node}-{STAMP}.log", path.name)
        return path.read_text()


def launcher_command(tmp_path: Path, job: dict[str, Any], *args: str) -> list[str]:
    """``python -I -S azbai_launcher.py --job … --ref logs=<share>``: the module alone, no site-packages."""
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir(exist_ok=True)
    shutil.copy(launcher.__file__, snapshot / "azbai_launcher.py")
    (snapshot / "job.json").write_text(json.dumps(job))
    share = tmp_path / "share"
    return [
        PY, "-I", "-S", str(snapshot / "azbai_launcher.py"), "--job", str(snapshot / "job.json"),
        "--segment", SEGMENT, "--work", str(tmp_path / "work"), "--ref", f"logs={share}", *args,
    ]  # fmt: skip


def environment(extra: dict[str, str] | None = None, path_prefix: Path | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AZUREML_", "OMPI_", "PMI_", "TF_CONFIG"))
    }
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    env.update(extra or {})
    return env


def launch(
    tmp_path: Path,
    job: dict[str, Any],
    *args: str,
    env: dict[str, str] | None = None,
    path_prefix: Path | None = None,
) -> Result:
    start = time.monotonic()
    proc = subprocess.run(
        launcher_command(tmp_path, job, *args),
        cwd=tmp_path,
        env=environment(env, path_prefix),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Result(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        tmp_path / "work",
        tmp_path / "share",
        time.monotonic() - start,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie nobody reaped yet is not running
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def pids_in(directory: Path) -> list[int]:
    """The pids ``sleeper.sh`` recorded (a file still being written is skipped)."""
    return [int(text) for p in directory.glob("*.pid") if (text := p.read_text().strip())]


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def fake_mpirun(tmp_path: Path, version: str | None = None) -> Path:
    """A bin directory whose ``mpirun`` is the Open MPI stand-in, or (``version``) another MPI's mpirun."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mpirun = bin_dir / "mpirun"
    if version is None:
        shutil.copy(DATA / "fake-mpirun", mpirun)
    else:
        mpirun.write_text(f"#!/usr/bin/env bash\necho '{version}'\n")
    mpirun.chmod(0o755)
    return bin_dir


# --- standalone ---------------------------------------------------------------------------------------------


def test_the_module_is_stdlib_only_python38_and_runs_alone(tmp_path: Path) -> None:
    source = Path(launcher.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    # azureml (v1) and azure.keyvault/azure.identity (v2) are imported lazily, inside Azure ML only, for secrets
    assert imported - sys.stdlib_module_names == {"azureml", "azure"}
    top_level_azure = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in top_level_azure if m.startswith("azure")}
    top_level = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert "azureml.core" not in top_level
    command = launcher_command(tmp_path, {"not": "a job"})
    proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert proc.returncode == launcher.EXIT_LAUNCHER_ERROR
    assert proc.stderr.startswith("Error: the job section lacks name")


# --- environment, job preparation, secrets, directories -----------------------------------------------------


def test_job_preparation_variables_secrets_and_output_composition(tmp_path: Path) -> None:
    secret = f"S3cr3t-{uuid.uuid4().hex}"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    # job preparation sees the secret (compared by digest: the plan must not hold it), and runs first
    prep = (
        f'[ $(printf %s "$TOKEN" | sha256sum | cut -c1-64) = {digest} ] && echo prep on $AZ_BATCHAI_JOB_TEMP'
    )
    prep += "; echo prep-err >&2; touch $AZ_BATCHAI_JOB_TEMP/prepared"
    command = f"test -f $AZ_BATCHAI_JOB_TEMP/prepared && {REPORT} $AZ_BATCHAI_SHARED_JOB_TEMP/master.json"
    props = {
        **custom(command),
        "jobPreparation": {"commandLine": prep},
        "inputDirectories": [{"id": "DATA", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/data"}],
        "outputDirectories": [
            {"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs", "pathSuffix": "Models"},
            {"id": "SUMMARY", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"},
        ],
        "environmentVariables": [
            {"name": "GREETING", "value": "hello ${AZ_BATCHAI_JOB_TEMP}/x $UNDEFINED_THING!"},
            {"name": "MODEL_DIR", "value": "$AZ_BATCHAI_OUTPUT_MODEL"},
            {"name": "REPORT_VARS", "value": "GREETING,MODEL_DIR"},
            {"name": "REPORT_SECRET", "value": "TOKEN"},
        ],
        "secrets": [{"name": "TOKEN", "value": secret}],
    }
    job = plan_job(tmp_path, props, output_mode=DataMode.MOUNT)
    assert job["secrets"] == [{"name": "TOKEN", "source": "environment", "secret_url": None}]
    result = launch(tmp_path, job, env={"TOKEN": secret})
    assert result.code == 0, result.stderr

    work, job_dir = result.work, result.work / "jobs" / "job"
    report = result.report("master.json")
    mounts = job_dir / "mounts"
    assert report["AZ_BATCHAI_MOUNT_ROOT"] == str(work / "mounts")
    assert report["AZ_BATCHAI_JOB_MOUNT_ROOT"] == str(mounts)
    assert report["AZ_BATCHAI_JOB_TEMP_DIR"] == str(work / "jobs")
    assert report["AZ_BATCHAI_JOB_TEMP"] == str(job_dir / "temp" / "node-0")
    assert report["AZ_BATCHAI_SHARED_JOB_TEMP"] == str(job_dir / "shared")
    assert report["AZ_BATCHAI_MPI_HOST_FILE"] == str(job_dir / "hostfile")
    assert report["AZ_BATCHAI_STDOUTERR_DIR"] == f"{mounts}/logs/{SEGMENT}/stdouterr"
    assert report["AZ_BATCHAI_NUM_GPUS"].isdigit()
    assert report["AZ_BATCHAI_INPUT_DATA"] == f"{mounts}/logs/data"
    assert report["AZ_BATCHAI_OUTPUT_MODEL"] == f"{mounts}/logs/{SEGMENT}/outputs/Models"
    assert report["AZ_BATCHAI_OUTPUT_SUMMARY"] == f"{mounts}/logs/{SEGMENT}/outputs"
    # Batch AI set environmentVariables as written: no expansion
    assert report["GREETING"] == "hello ${AZ_BATCHAI_JOB_TEMP}/x $UNDEFINED_THING!"
    assert report["MODEL_DIR"] == "$AZ_BATCHAI_OUTPUT_MODEL"
    assert report["secret_sha256"] == digest
    assert report["cwd"] == str(work)
    assert "AZ_BATCHAI_TASK_INDEX" not in report and "TF_CONFIG" not in report
    # the volume is a link to the data reference: outputs land in the share itself
    assert (mounts / "logs").resolve() == result.share.resolve()
    assert (result.share / SEGMENT / "outputs" / "Models").is_dir()
    assert (job_dir / "hostfile").read_text() == "localhost slots=1\n"

    (prep_out,) = result.stdouterr.glob("stdout-job_prep-*")
    assert re.fullmatch(f"stdout-job_prep-node-0-{STAMP}.txt", prep_out.name)
    assert prep_out.read_text() == f"prep on {job_dir}/temp/node-0\n"
    assert result.text(prep_out.name.replace("stdout", "stderr")) == "prep-err\n"
    assert result.text("stdout.txt") == "reported master.json\n"
    assert result.text("stderr.txt") == "stderr of master.json\n"
    log = result.execution_log()
    assert log.index("started job preparation") < log.index("started master")
    assert "job finished with exit code 0" in log
    assert props["customToolkitSettings"]["commandLine"] in log  # commands as the plan wrote them

    assert files_containing(work, secret.encode()) == []
    assert files_containing(result.share, secret.encode()) == []
    assert secret not in result.stdout + result.stderr


def test_data_references_give_inputs_outputs_and_volumes(tmp_path: Path) -> None:
    props = {
        **custom(f"{REPORT} $AZ_BATCHAI_SHARED_JOB_TEMP/master.json; ls $AZ_BATCHAI_MOUNT_ROOT/external/"),
        "inputDirectories": [{"id": "DATA", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/data"}],
        "outputDirectories": [
            {"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs", "pathSuffix": "m"},
        ],
        "mountVolumes": {
            **LOGS_SHARE,
            "fileServers": [{"fileServer": {"id": FILE_SERVER}, "relativeMountPath": "nfs"}],
        },
        "jobPreparation": {"commandLine": "ls $AZ_BATCHAI_JOB_MOUNT_ROOT/nfs"},
    }  # fmt: skip
    job = plan_job(tmp_path, props, input_mode=DataMode.DOWNLOAD)
    refs = {d["id"]: d["data_reference"] for d in job["input_directories"] + job["output_directories"]}
    assert refs == {"DATA": "input_data", "MODEL": "output_model"}
    assert {v["name"]: v["kind"] for v in job["volumes"]} == {
        "logs": "azure_file_share", "nfs": "file_server", "cluster_external": "undescribed"
    }  # fmt: skip
    external = tmp_path / "cluster-share"
    (external / "sample").mkdir(parents=True)
    (tmp_path / "downloaded").mkdir()
    result = launch(
        tmp_path,
        job,
        "--ref", f"input_data={tmp_path / 'downloaded'}",
        "--mount", f"external={external}",
        env={"AZUREML_DATAREFERENCE_output_model": str(tmp_path / "upload" / "MODEL")},
    )  # fmt: skip
    assert result.code == 0, result.stderr
    report = result.report("master.json")
    assert report["AZ_BATCHAI_INPUT_DATA"] == str(tmp_path / "downloaded")
    assert report["AZ_BATCHAI_OUTPUT_MODEL"] == str(tmp_path / "upload" / "MODEL")
    assert (tmp_path / "upload" / "MODEL").is_dir()
    assert result.text("stdout.txt").endswith("sample\n")
    assert (result.work / "mounts" / "external").resolve() == external.resolve()
    # an NFS volume has no Azure ML equivalent: an empty directory stands in for it
    nfs = result.work / "jobs" / "job" / "mounts" / "nfs"
    assert nfs.is_symlink() and nfs.resolve() == (result.work / "volumes" / "nfs").resolve()


def test_missing_references_and_secrets_are_named_and_nothing_runs(tmp_path: Path) -> None:
    job = plan_job(tmp_path, {**custom("touch ran"), "secrets": [{"name": "TOKEN", "value": "hidden-value"}]})
    command = launcher_command(tmp_path, job, "--ref", "nope=/x")
    command.remove(f"logs={tmp_path / 'share'}")
    command.remove("--ref")
    proc = subprocess.run(
        command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == launcher.EXIT_LAUNCHER_ERROR
    assert "--ref nope=…: the job has no data reference 'nope'" in proc.stderr
    assert "data reference 'logs': give --ref logs=PATH or set AZUREML_DATAREFERENCE_logs" in proc.stderr
    assert "secret 'TOKEN': set the environment variable TOKEN" in proc.stderr
    assert "hidden-value" not in proc.stderr
    assert not (tmp_path / "work").exists()


def test_stale_links_are_replaced_and_real_data_is_never_removed(tmp_path: Path) -> None:
    job = plan_job(tmp_path, custom("true"))
    assert launch(tmp_path, job).code == 0
    link = tmp_path / "work" / "jobs" / "job" / "mounts" / "logs"
    other = tmp_path / "other-share"
    command = launcher_command(tmp_path, job, "--mount", f"logs={other}")
    assert subprocess.run(command, env=environment(), timeout=30).returncode == 0
    assert link.resolve() == other.resolve()
    assert (tmp_path / "share" / SEGMENT / "stdouterr" / "stdout.txt").exists()  # the first run's logs stay

    link.unlink()
    link.mkdir()
    (link / "precious.txt").write_text("data")
    result = launch(tmp_path, job)
    assert result.code == launcher.EXIT_LAUNCHER_ERROR
    assert "is not a link from an earlier run" in result.stderr
    assert (link / "precious.txt").read_text() == "data"


# --- toolkits -----------------------------------------------------------------------------------------------


def test_pytorch_four_ranks_on_two_nodes(tmp_path: Path) -> None:
    settings = {
        "pythonInterpreterPath": PY,
        "pythonScriptFilePath": str(DATA / "report_env.py"),
        "commandLineArgs": "$AZ_BATCHAI_SHARED_JOB_TEMP/rank-$AZ_BATCHAI_TASK_INDEX.json",
        "processCount": 4,
    }
    props = {
        "nodeCount": 2,
        "pyTorchSettings": settings,
        "jobPreparation": {"commandLine": "echo $AZ_BATCHAI_JOB_TEMP"},
    }
    job = plan_job(tmp_path, props)
    result = launch(tmp_path, job)
    assert result.code == 0, result.stderr

    reports = [result.report(f"rank-{rank}.json") for rank in range(4)]
    temp = result.work / "jobs" / "job" / "temp"
    assert [r["AZ_BATCHAI_JOB_TEMP"] for r in reports] == [str(temp / f"node-{n}") for n in (0, 0, 1, 1)]
    assert [r["AZ_BATCHAI_TASK_INDEX"] for r in reports] == ["0", "1", "2", "3"]
    assert [r["RANK"] for r in reports] == ["0", "1", "2", "3"]
    assert [r["LOCAL_RANK"] for r in reports] == ["0", "1", "0", "1"]
    assert {r["WORLD_SIZE"] for r in reports} == {"4"}
    assert {r["MASTER_ADDR"] for r in reports} == {"127.0.0.1"}
    assert len({r["MASTER_PORT"] for r in reports}) == 1
    (init,) = {r["AZ_BATCHAI_PYTORCH_INIT_METHOD"] for r in reports}
    assert re.fullmatch(f"file://{result.shared}/pytorch_init_[0-9a-f]{{32}}", init)
    assert (result.work / "jobs" / "job" / "hostfile").read_text() == "localhost slots=2\nlocalhost slots=2\n"
    for rank in range(4):
        assert result.text(f"stdout-{rank}.txt") == f"reported rank-{rank}.json\n"
        assert result.text(f"stderr-{rank}.txt") == f"stderr of rank-{rank}.json\n"
    for node in (0, 1):
        (prep,) = result.stdouterr.glob(f"stdout-job_prep-node-{node}-*.txt")
        assert prep.read_text() == f"{temp / f'node-{node}'}\n"
        assert "started rank" in result.execution_log(f"node-{node}")
    assert "rank 3" in result.execution_log("node-1") and "rank 3" not in result.execution_log("node-0")
    assert not (result.stdouterr / "stdout.txt").exists()


def test_tensorflow_parameter_server_is_stopped_when_the_workers_finish(tmp_path: Path) -> None:
    settings = {
        "pythonInterpreterPath": PY,
        "pythonScriptFilePath": str(DATA / "report_env.py"),
        "parameterServerCommandLineArgs": "$AZ_BATCHAI_SHARED_JOB_TEMP/ps-$AZ_BATCHAI_TASK_INDEX.json 60",
        "workerCommandLineArgs": "$AZ_BATCHAI_SHARED_JOB_TEMP/wk-$AZ_BATCHAI_TASK_INDEX.json 0.5",
        "parameterServerCount": 1,
        "workerCount": 2,
    }
    result = launch(tmp_path, plan_job(tmp_path, {"tensorFlowSettings": settings}))
    assert result.code == 0, result.stderr
    assert result.seconds < 15

    ps, workers = result.report("ps-0.json"), [result.report(f"wk-{i}.json") for i in (0, 1)]
    assert not alive(ps["pid"])
    (ps_host,) = ps["AZ_BATCHAI_PS_HOSTS"].split(",")
    worker_hosts = ps["AZ_BATCHAI_WORKER_HOSTS"].split(",")
    assert len(set([ps_host, *worker_hosts])) == 3 and ps_host.startswith("127.0.0.1:")
    for index, report in enumerate(workers):
        assert report["AZ_BATCHAI_TASK_INDEX"] == str(index)
        assert json.loads(report["TF_CONFIG"]) == {
            "cluster": {"ps": [ps_host], "worker": worker_hosts},
            "task": {"type": "worker", "index": index},
            "environment": "cloud",
        }
    assert json.loads(ps["TF_CONFIG"])["task"] == {"type": "ps", "index": 0}
    names = {p.name for p in result.stdouterr.glob("std*")}
    assert names == {
        f"{stream}-{task}.txt" for stream in ("stdout", "stderr") for task in ("ps-0", "wk-0", "wk-1")
    }
    assert "terminating the parameter servers" in result.execution_log()


def mpi_job(tmp_path: Path, command: str, processes: int, nodes: int = 1, **props: Any) -> dict[str, Any]:
    settings = {"commandLine": command, "processCount": processes}
    return plan_job(tmp_path, {"nodeCount": nodes, "customMpiSettings": settings, **props})


def test_mpi_ranks_without_open_mpi_share_one_log(tmp_path: Path) -> None:
    job = mpi_job(
        tmp_path, f"{REPORT} $AZ_BATCHAI_SHARED_JOB_TEMP/rank-$OMPI_COMM_WORLD_RANK.json", 3, nodes=2
    )
    result = launch(tmp_path, job, path_prefix=fake_mpirun(tmp_path, version="HYDRA build details: 3.3"))
    assert result.code == 0, result.stderr
    reports = [result.report(f"rank-{rank}.json") for rank in range(3)]
    for rank, report in enumerate(reports):
        assert (report["OMPI_COMM_WORLD_RANK"], report["PMI_RANK"]) == (str(rank), str(rank))
        assert (report["OMPI_COMM_WORLD_SIZE"], report["PMI_SIZE"]) == ("3", "3")
    assert [r["OMPI_COMM_WORLD_LOCAL_RANK"] for r in reports] == ["0", "1", "0"]
    assert [r["AZ_BATCHAI_JOB_TEMP"][-6:] for r in reports] == ["node-0", "node-0", "node-1"]
    assert sorted(result.text("stdout.txt").splitlines()) == [f"reported rank-{r}.json" for r in range(3)]
    assert (result.work / "jobs" / "job" / "hostfile").read_text() == "localhost slots=2\nlocalhost slots=2\n"


def test_mpi_ranks_under_open_mpi_mpirun(tmp_path: Path) -> None:
    job = mpi_job(
        tmp_path, f"{REPORT} $AZ_BATCHAI_SHARED_JOB_TEMP/rank-$OMPI_COMM_WORLD_RANK.json", 2, nodes=2
    )
    result = launch(tmp_path, job, path_prefix=fake_mpirun(tmp_path))
    assert result.code == 0, result.stderr
    reports = [result.report(f"rank-{rank}.json") for rank in range(2)]
    assert [r["PMI_RANK"] for r in reports] == ["0", "1"]
    assert [r["AZ_BATCHAI_JOB_TEMP"][-6:] for r in reports] == ["node-0", "node-1"]
    assert sorted(result.text("stdout.txt").splitlines()) == ["reported rank-0.json", "reported rank-1.json"]
    assert "started mpirun -np 2" in result.execution_log()


def test_a_failing_rank_stops_the_others_and_sets_the_exit_code(tmp_path: Path) -> None:
    # rank 1 fails once rank 0's sleeper has recorded its pids
    shared = "$AZ_BATCHAI_SHARED_JOB_TEMP"
    wait = f"until [ $(cat {shared}/*.pid 2>/dev/null | wc -l) -ge 2 ]; do sleep 0.05; done"
    command = f'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then {wait}; exit 5; fi; {DATA / "sleeper.sh"} {shared}'
    result = launch(tmp_path, mpi_job(tmp_path, command, 2))
    assert result.code == 5
    assert result.seconds < 15
    assert "rank 1 failed: terminating the other processes" in result.execution_log()
    pids = pids_in(result.shared)
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


# --- failures, limits, signals ------------------------------------------------------------------------------


def test_a_failing_job_keeps_its_logs_and_partial_outputs(tmp_path: Path) -> None:
    props = {
        **custom(f"{DATA / 'fail.sh'} 3"),
        "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
    }
    result = launch(tmp_path, plan_job(tmp_path, props, output_mode=DataMode.MOUNT))
    assert result.code == 3
    assert result.text("stdout.txt") == "working on it\n"
    assert result.text("stderr.txt") == "something went wrong\n"
    assert (result.share / SEGMENT / "outputs" / "partial.txt").read_text() == "partial result\n"
    log = result.execution_log()
    assert "exited with code 3" in log and "job finished with exit code 3" in log


def test_a_failing_job_preparation_fails_the_job_before_the_toolkit(tmp_path: Path) -> None:
    props = {
        **custom("touch $AZ_BATCHAI_SHARED_JOB_TEMP/ran"),
        "jobPreparation": {"commandLine": "echo no; exit 7"},
    }
    result = launch(tmp_path, plan_job(tmp_path, props))
    assert result.code == 7
    assert not (result.shared / "ran").exists()
    assert "job preparation failed with exit code 7; the toolkit is not started" in result.execution_log()
    (prep,) = result.stdouterr.glob("stdout-job_prep-node-0-*.txt")
    assert prep.read_text() == "no\n"


def test_max_wall_clock_time_terminates_every_process(tmp_path: Path) -> None:
    props = {
        **custom(f"{DATA / 'sleeper.sh'} $AZ_BATCHAI_SHARED_JOB_TEMP"),
        "constraints": {"maxWallClockTime": "00:00:02"},
    }
    job = plan_job(tmp_path, props)
    assert job["max_wall_clock_seconds"] == 2
    result = launch(tmp_path, job)
    assert result.code == launcher.EXIT_TIMEOUT == 124
    assert 2 <= result.seconds < 8
    assert "maxWallClockTime (2 s) exceeded" in result.stderr
    assert "maxWallClockTime (2 s) exceeded" in result.execution_log()
    assert result.text("stdout.txt") == "sleeping\n"
    pids = pids_in(result.shared)
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


def test_processes_that_ignore_sigterm_are_killed_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    props = {
        **custom(f"{DATA / 'sleeper.sh'} $AZ_BATCHAI_SHARED_JOB_TEMP ignore-term"),
        "constraints": {"maxWallClockTime": "00:00:01"},
    }
    job = plan_job(tmp_path, props)
    monkeypatch.setattr(launcher, "GRACE_SECONDS", 0.5)
    work, share = tmp_path / "work", tmp_path / "share"
    start = time.monotonic()
    code = launcher.run(job, SEGMENT, work, {"logs": str(share)}, {}, env=environment())
    assert code == launcher.EXIT_TIMEOUT
    assert time.monotonic() - start < 6
    pids = pids_in(work / "jobs" / "job" / "shared")
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)
    (log,) = (share / SEGMENT / "stdouterr").glob("execution-*.log")
    assert "master still runs after 0.5 s: SIGKILL" in log.read_text()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_to_the_launcher_are_forwarded(tmp_path: Path, signum: signal.Signals, code: int) -> None:
    job = plan_job(tmp_path, custom(f"{DATA / 'sleeper.sh'} $AZ_BATCHAI_SHARED_JOB_TEMP"))
    shared = tmp_path / "work" / "jobs" / "job" / "shared"
    proc = subprocess.Popen(
        launcher_command(tmp_path, job), env=environment(), stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while len(pids_in(shared)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = pids_in(shared)
        assert len(pids) == 2
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == code
    assert stderr == ""
    assert not any(alive(pid) for pid in pids)
    (log,) = (tmp_path / "share" / SEGMENT / "stdouterr").glob("execution-*.log")
    assert f"the launcher received {signum.name}" in log.read_text()


def test_the_job_stops_when_the_parent_it_names_dies(tmp_path: Path) -> None:
    # --parent: what the local runner passes instead of a preexec_fn (which costs the runner a full fork)
    job = plan_job(tmp_path, custom(f"{DATA / 'sleeper.sh'} $AZ_BATCHAI_SHARED_JOB_TEMP"))
    shared = tmp_path / "work" / "jobs" / "job" / "shared"
    # this test's own parent is not the launcher's: the launcher exits before the job starts
    not_mine = launch(tmp_path, job, "--parent", str(os.getppid()))
    assert not_mine.code == launcher.EXIT_SIGTERM and not pids_in(shared)
    # a parent that starts the launcher naming itself, then dies
    parent = subprocess.Popen(
        [PY, "-c", "import subprocess, sys, os, time\n"
         "subprocess.Popen(sys.argv[1:] + ['--parent', str(os.getpid())])\ntime.sleep(60)",
         *launcher_command(tmp_path, job)],
        env=environment(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while len(pids_in(shared)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = pids_in(shared)
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        parent.kill()
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    (log,) = (tmp_path / "share" / SEGMENT / "stdouterr").glob("execution-*.log")
    assert "the launcher received SIGTERM" in log.read_text()


# --- external ranks, echo -----------------------------------------------------------------------------------


def test_external_mode_runs_only_this_rank(tmp_path: Path) -> None:
    command = f"{REPORT} $AZ_BATCHAI_SHARED_JOB_TEMP/rank-$OMPI_COMM_WORLD_RANK.json"
    job = mpi_job(tmp_path, command, 3, jobPreparation={"commandLine": "echo prep"})
    env = {
        "OMPI_COMM_WORLD_RANK": "1",
        "OMPI_COMM_WORLD_SIZE": "3",
        "AZ_BATCH_HOST_LIST": "10.0.0.4,10.0.0.5",
    }
    result = launch(tmp_path, job, "--ranks", "external", env=env)
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in result.shared.glob("rank-*.json")) == ["rank-1.json"]
    report = result.report("rank-1.json")
    ranks = {name: report[name] for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "OMPI_COMM_WORLD_SIZE")}
    assert ranks == {"OMPI_COMM_WORLD_RANK": "1", "PMI_RANK": "1", "OMPI_COMM_WORLD_SIZE": "3"}
    assert result.text("stdout.txt") == "reported rank-1.json\n"
    assert (result.work / "jobs" / "job" / "hostfile").read_text() == "10.0.0.4 slots=3\n10.0.0.5 slots=3\n"
    (prep,) = result.stdouterr.glob("stdout-job_prep-node-0-*.txt")  # local rank 0 of its node
    assert prep.read_text() == "prep\n"
    assert "rank 1" in result.execution_log()


def test_external_local_ranks_wait_for_the_nodes_job_preparation(tmp_path: Path) -> None:
    command = f"test -f $AZ_BATCHAI_JOB_TEMP/prepared && {REPORT} $AZ_BATCHAI_SHARED_JOB_TEMP/rank-$RANK.json"
    settings = {"pythonScriptFilePath": "x.py", "processCount": 2}
    prep = {"commandLine": "sleep 1; touch $AZ_BATCHAI_JOB_TEMP/prepared"}
    job = plan_job(tmp_path, {"pyTorchSettings": settings, "jobPreparation": prep})
    job["launch"]["groups"][0]["command"] = command
    command_line = launcher_command(tmp_path, job, "--ranks", "external")
    ranks = []
    try:
        for rank in (1, 0):  # the waiting rank first
            env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "AZUREML_RUN_ID": "run-1"}
            env.update(MASTER_ADDR="10.0.0.4", MASTER_PORT="6105")
            ranks.append(
                subprocess.Popen(command_line, env=environment(env), stderr=subprocess.PIPE, text=True)
            )
        for proc in ranks:
            _, stderr = proc.communicate(timeout=30)
            assert proc.returncode == 0, stderr
    finally:
        for proc in ranks:
            proc.kill()
            proc.communicate()
    reports = [json.loads((tmp_path / "work/jobs/job/shared" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["AZ_BATCHAI_TASK_INDEX"] for r in reports] == ["0", "1"]
    assert {r["AZ_BATCHAI_PYTORCH_INIT_METHOD"] for r in reports} == {"tcp://10.0.0.4:6105"}
    assert len(list((tmp_path / "share" / SEGMENT / "stdouterr").glob("stdout-job_prep-*"))) == 1


def test_external_mode_needs_a_rank(tmp_path: Path) -> None:
    result = launch(tmp_path, mpi_job(tmp_path, "true", 2), "--ranks", "external")
    assert result.code == launcher.EXIT_LAUNCHER_ERROR
    assert "none of OMPI_COMM_WORLD_RANK, PMI_RANK, RANK or TF_CONFIG is set" in result.stderr


def test_echo_copies_process_output_to_the_launcher(tmp_path: Path) -> None:
    job = plan_job(tmp_path, custom("echo to-out; echo to-err >&2"))
    quiet = launch(tmp_path, job)
    assert (quiet.code, quiet.stdout, quiet.stderr) == (0, "", "")
    echoed = launch(tmp_path, job, "--echo")
    assert (echoed.code, echoed.stdout, echoed.stderr) == (0, "to-out\n", "to-err\n")
    assert echoed.text("stdout.txt") == "to-out\nto-out\n"  # both runs, appended
    assert echoed.text("stderr.txt") == "to-err\nto-err\n"


def test_pipeline_arguments_data_param_and_run_id(tmp_path: Path) -> None:
    """The form a pipeline step passes: --data NAME PATH, --param NAME VALUE, and {run-id} in the segment."""
    from azbai import launcher

    assert launcher.resolve_segment("a/{run-id}", {"AZUREML_RUN_ID": "run-42"}) == "a/run-42"
    assert launcher.resolve_segment("a/b", {}) == "a/b"
    assert launcher.fill_parameters("style {parameters.style}!", {"style": "19"}) == "style 19!"
    with pytest.raises(launcher.LauncherError, match="--param missing VALUE"):
        launcher.fill_parameters("{parameters.missing}", {})


@pytest.mark.parametrize(
    ("error", "said"),
    [(MemoryError(), "ran out of memory"), (RuntimeError("boom"), "the launcher failed: RuntimeError: boom")],
)
def test_an_internal_launcher_error_is_one_error_line_and_exit_125(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    said: str,
) -> None:
    # issue 11 item 8: the runner reads the reason from the "Error: " line into executionInfo.errors
    job = tmp_path / "job.json"
    job.write_text("{}")
    monkeypatch.setattr(launcher, "load_job_file", lambda path: (_ for _ in ()).throw(error))
    assert launcher.main(["--job", str(job), "--segment", "s"]) == launcher.EXIT_LAUNCHER_ERROR
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and said in lines[0]


def test_local_ranks_link_the_same_volume_at_the_same_time(tmp_path: Path) -> None:
    # Several launchers of one node link each volume at once. One used to see no link (is_symlink) and then,
    # following the link another had just renamed into place, a directory with files in it: "exists and is not
    # a link from an earlier run" (seen in a 2-node, 2-process MPI job). Threads switching as often as they can.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(200):
            target = tmp_path / f"target-{round_}"
            target.mkdir()
            (target / "stdout.txt").write_text("another rank's output\n")
            link = tmp_path / f"root-{round_}" / "logs"
            errors: list[BaseException] = []

            def link_it(
                link: Path = link, target: Path = target, errors: list[BaseException] = errors
            ) -> None:
                try:
                    launcher._replace_link(link, target)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=link_it) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == [] and os.readlink(link) == str(target), round_
    finally:
        sys.setswitchinterval(interval)
    # what is data stays data: a directory with files in it, or a file, is never replaced
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "logs").mkdir()
    (tmp_path / "data" / "logs" / "kept.txt").write_text("mine\n")
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / "logs").write_text("mine\n")
    for folder in ("data", "file"):
        with pytest.raises(launcher.LauncherError, match="exists and is not a link from an earlier run"):
            launcher._replace_link(tmp_path / folder / "logs", tmp_path / "target-0")
    assert (tmp_path / "data" / "logs" / "kept.txt").read_text() == (tmp_path / "file" / "logs").read_text()
    # an earlier run's link and an empty directory are replaced
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "logs").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "empty" / "logs").mkdir(parents=True)
    for folder in ("old", "empty"):
        launcher._replace_link(tmp_path / folder / "logs", tmp_path / "target-0")
        assert os.readlink(tmp_path / folder / "logs") == str(tmp_path / "target-0")


def test_the_supervisor_wakes_when_a_process_exits_not_at_its_next_poll() -> None:
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        began = time.monotonic()
        launcher._wait_for_an_exit([quick, slow], timeout=20)
        assert time.monotonic() - began < 10 and quick.poll() == 0 and slow.poll() is None
        began = time.monotonic()
        launcher._wait_for_an_exit([slow], timeout=0.3)  # nothing exits: back after the timeout
        assert time.monotonic() - began >= 0.3 and slow.poll() is None
        launcher._wait_for_an_exit([quick], timeout=0.1)  # reaped already: a plain sleep, no error
    finally:
        slow.kill()
        slow.wait()


# --- warm starts (azbai.local.warm) ---------------------------------------------------------------------------

WARM = Path(__file__).parent / "data" / "warm"


@pytest.fixture
def pool() -> Iterator[Any]:
    from azbai.local.warm import CommandPool

    commands = CommandPool()
    try:
        yield commands
    finally:
        commands.close()


def warm_launch(tmp_path: Path, pool: Any, job: dict[str, Any], env: dict[str, str] | None = None) -> Result:
    """The launcher with a zygote for the environment it is started in (as the local engine gives one)."""
    address = pool.address(environment(env))
    assert address is not None
    tmp_path.mkdir(parents=True, exist_ok=True)
    return launch(tmp_path, job, "--warm", address, env=env)


def started_by(result: Result) -> int:
    return int(json.loads(result.text("stderr.txt").splitlines()[-1])["ppid"])


def launcher_pid(result: Result) -> int:
    return int(re.search(r"started master \(pid (\d+)", result.execution_log()).group(1))  # type: ignore[union-attr]


@contextlib.contextmanager
def nohup_and_a_mask() -> Iterator[None]:
    """This process as ``nohup`` leaves it (SIGHUP ignored), SIGUSR1 ignored too and SIGUSR2 blocked: what a
    launcher started now inherits, and its job after it."""
    before = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGHUP, signal.SIGUSR1)}
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR2])
        for signum, handler in before.items():
            signal.signal(signum, handler)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts need Linux")
@pytest.mark.parametrize("inherited", [False, True], ids=["plain", "nohup"])
def test_a_warm_job_sees_what_a_cold_one_sees(tmp_path: Path, pool: Any, inherited: bool) -> None:
    job = plan_job(tmp_path / "cold", custom(f"{PY} {WARM / 'probe.py'} --flag $AZ_BATCHAI_NUM_GPUS x=1"))
    with nohup_and_a_mask() if inherited else contextlib.nullcontext():
        cold = launch(tmp_path / "cold", job)
        warm = warm_launch(tmp_path / "warm", pool, job)
    assert cold.code == warm.code == 0, (cold.stderr, warm.stderr, warm.text("stderr.txt"))
    assert started_by(warm) in pool.pids()  # it was warm
    assert started_by(cold) not in pool.pids()
    seen = {r: json.loads(res.text("stdout.txt")) for r, res in (("cold", cold), ("warm", warm))}
    for report, result in zip(seen.values(), (cold, warm), strict=True):
        report["env"] = {k: v.replace(str(result.work.parent), "<root>") for k, v in report["env"].items()}
        report["cwd"] = report["cwd"].replace(str(result.work.parent), "<root>")
        fds = report.pop("open_fds")
        assert fds[:3] == [0, 1, 2]
        report["extra_fds"] = len(fds) - 4  # 0-2 and the one /proc/self/fd was read through
    # the one descriptor a warm job has more: the pipe it tells the zygote its imports through (close-on-exec)
    assert seen["warm"].pop("extra_fds") == 1 and seen["cold"].pop("extra_fds") == 0
    cold_env, warm_env = seen["cold"]["env"], seen["warm"]["env"]
    assert {
        k: (cold_env.get(k), warm_env.get(k))
        for k in {*cold_env, *warm_env}
        if cold_env.get(k) != warm_env.get(k)
    } == {}
    assert seen["warm"] == seen["cold"]
    assert seen["warm"]["argv"] == [str(WARM / "probe.py"), "--flag", "0", "x=1"]
    assert seen["warm"]["own_session"] and seen["warm"]["name"] == "__main__"
    # an ignored signal stays ignored across exec and bash, a blocked one blocked (this test itself may run under
    # nohup: then SIGHUP is ignored either way); SIGPIPE is Python's own
    assert seen["warm"]["handlers"]["SIGPIPE"] == str(signal.SIG_IGN)
    for name in ("SIGHUP", "SIGUSR1"):
        ignored_here = signal.getsignal(getattr(signal, name)) == signal.SIG_IGN
        assert (seen["warm"]["handlers"][name] == str(signal.SIG_IGN)) == (inherited or ignored_here)
    blocked_here = signal.SIGUSR2 in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert (int(signal.SIGUSR2) in seen["warm"]["mask"]) == (inherited or blocked_here)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts need Linux")
def test_the_zygote_imports_what_its_jobs_imported(tmp_path: Path, pool: Any) -> None:
    job = plan_job(tmp_path / "a", custom(f"{PY} {WARM / 'probe.py'}"))
    first, second = warm_launch(tmp_path / "a", pool, job), warm_launch(tmp_path / "b", pool, job)
    assert first.code == second.code == 0
    said = [json.loads(r.text("stderr.txt").splitlines()[-1]) for r in (first, second)]
    assert not said[0]["decimal"] and said[1]["decimal"]  # imported by the first job, held for the second


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts need Linux")
@pytest.mark.parametrize(
    ("how", "code", "stdout"),
    [
        ("plain", 0, "end of script\natexit ran\n"),
        ("thread", 0, "end of script\nthread joined\natexit ran\n"),
        ("exit 3", 3, "atexit ran\n"),
        ("message", 1, "atexit ran\n"),
        ("raise", 1, "atexit ran\n"),
        ("interrupt", 130, "atexit ran\n"),
    ],
)
def test_a_warm_job_ends_as_a_fresh_interpreter_does(
    tmp_path: Path, pool: Any, how: str, code: int, stdout: str
) -> None:
    job = plan_job(tmp_path / "cold", custom(f"{PY} {WARM / 'ending.py'} {how}"))
    cold, warm = launch(tmp_path / "cold", job), warm_launch(tmp_path / "warm", pool, job)
    assert cold.code == warm.code == code
    assert cold.text("stdout.txt") == warm.text("stdout.txt") == stdout
    # the same traceback or message, naming the script's own lines
    assert cold.text("stderr.txt") == warm.text("stderr.txt")
    if how == "raise":
        assert f'File "{WARM / "ending.py"}", line 17, in <module>' in warm.text("stderr.txt")
        assert "warm.py" not in warm.text("stderr.txt")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts need Linux")
@pytest.mark.parametrize(
    ("props", "why"),
    [
        (custom(f"{PY} {WARM / 'probe.py'}; true"), "a shell list"),
        (custom(f"{PY} '{WARM / 'probe.py'}'"), "quotes"),
        (custom(f"{PY} {WARM / 'probe.py'} > /dev/null 2>&1 || true"), "redirections"),
        (custom(f"{PY} {WARM / 'probe.py'} $UNSET_IN_THIS_JOB"), "an unset variable"),
        (custom(f"{PY} -u {WARM / 'probe.py'}"), "an interpreter option"),
        (
            {
                **custom(f"{PY} {WARM / 'probe.py'}"),
                "environmentVariables": [{"name": "OMP_NUM_THREADS", "value": "3"}],
            },
            "an environment of its own",
        ),
    ],
)
def test_what_a_zygote_cannot_start_as_bash_would_starts_cold(
    tmp_path: Path, pool: Any, props: dict[str, Any], why: str
) -> None:
    job = plan_job(tmp_path, props)
    result = warm_launch(tmp_path, pool, job)
    if why == "redirections":
        return  # nothing to read: it only has to run (cold, by bash)
    assert result.code == 0, result.text("stderr.txt")
    assert started_by(result) not in pool.pids(), why


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts need Linux")
def test_a_job_with_secrets_never_reaches_a_zygote(tmp_path: Path, pool: Any) -> None:
    secret = f"S3cr3t-{uuid.uuid4().hex}"
    props = {**custom(f"{PY} {WARM / 'probe.py'}"), "secrets": [{"name": "TOKEN", "value": secret}]}
    # even a zygote whose own environment has the secret (the engine never gives it one) is not asked
    result = warm_launch(tmp_path, pool, plan_job(tmp_path, props), env={"TOKEN": secret})
    assert result.code == 0, result.text("stderr.txt")
    assert started_by(result) not in pool.pids()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts need Linux")
def test_a_folder_that_shadows_what_the_zygote_holds_gets_a_cold_start(tmp_path: Path, pool: Any) -> None:
    folder = tmp_path / "scripts"
    folder.mkdir()
    shutil.copy(WARM / "probe.py", folder / "probe.py")
    (folder / "json.py").write_text(
        "import importlib.machinery, sys\n"
        "SHADOWED = True\n"
        "spec = importlib.machinery.PathFinder.find_spec('json', sys.path[1:])\n"
        "real = spec.loader.load_module()\n"
        "dump, dumps, loads = real.dump, real.dumps, real.loads\n"
    )
    job = plan_job(tmp_path, custom(f"{PY} {folder / 'probe.py'}"))
    result = warm_launch(tmp_path, pool, job)
    assert result.code == 0, result.text("stderr.txt")
    assert started_by(result) not in pool.pids()  # cold: the folder's json.py is what the script imported


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts need Linux")
def test_a_warm_job_stops_when_its_launcher_is_killed(tmp_path: Path, pool: Any) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text(
        "import os, sys, time\n"
        "open(os.path.join(sys.argv[1], f'{os.getpid()}.pid'), 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    job = plan_job(tmp_path / "j", custom(f"{PY} {script} $AZ_BATCHAI_SHARED_JOB_TEMP"))
    address = pool.address(environment())
    proc = subprocess.Popen(
        launcher_command(tmp_path, job, "--warm", address), cwd=tmp_path, env=environment()
    )
    shared = tmp_path / "work" / "jobs" / "job" / "shared"
    deadline = time.monotonic() + 20
    while not pids_in(shared) and time.monotonic() < deadline:
        time.sleep(0.05)
    (pid,) = pids_in(shared)
    assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) in pool.pids()  # warm
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


@pytest.mark.parametrize(
    ("command", "env", "words"),
    [
        ("python a.py --x $A ${B}/c", {"A": "1", "B": "/b"}, ["python", "a.py", "--x", "1", "/b/c"]),
        ("  python   a.py  ", {}, ["python", "a.py"]),
        ("python a.py $A", {"A": "two words"}, None),  # field splitting
        ("python a.py $A", {"A": "*.txt"}, None),  # globbing
        ("python a.py $A", {"A": ""}, None),  # an empty unquoted expansion disappears
        ("python a.py $1", {}, None),
        ("A=1 python a.py", {}, None),
        ("python a.py\npython b.py", {}, None),
        ("python a.py | cat", {}, None),
        ("python ~/a.py", {}, None),
        ("python a.py", {"BASH_ENV": "/x"}, None),
        ("python a.py", {"BASH_FUNC_python%%": "() { :; }"}, None),
    ],
)
def test_plain_commands_are_only_those_bash_would_run_word_for_word(
    command: str, env: dict[str, str], words: list[str] | None
) -> None:
    assert launcher.plain_command(["bash", "-c", command], env) == words
