"""The Batch AI compatibility launcher: recreate a Batch AI job's environment and run the job.

This module is standalone on purpose: standard library only, Python >= 3.8, no ``azbai`` import. It is copied
as ``azbai_launcher.py`` into every Azure ML snapshot and runs the same way locally::

    python azbai_launcher.py --job job.json --segment SEGMENT [--work DIR] [--ref NAME=PATH]...
                             [--data NAME PATH]... [--mount VOLUME=PATH]... [--param NAME VALUE]...
                             [--ranks all|external] [--echo]

``--job`` is the plan's job section (``azbai.plan.serialize.job_to_json``). ``--segment`` is Batch AI's
``jobOutputDirectoryPathSegment`` (``{run-id}`` in it becomes ``$AZUREML_RUN_ID``; ``{subscription}``,
``{resource_group}``, ``{workspace}`` become ``$AZUREML_ARM_SUBSCRIPTION``, ``_RESOURCEGROUP``, ``_WORKSPACE_NAME``).
``--data NAME PATH`` gives a data reference's path (an Azure ML v2 command line passes ``${{inputs.X}}`` and
``${{outputs.Y}}`` there). ``--ranks all`` (local runs) starts every process of the job itself,
simulating ``nodeCount`` nodes; ``--ranks external`` (inside Azure ML, which starts one launcher per process
with its MPI, PyTorch or TensorFlow distribution) runs only this process's rank.

Layout under the work directory (``--work``, else ``$AZ_BATCHAI_LAUNCHER_WORK``, else ``./azbai_work``)::

    <work>/                                the job processes' working directory
      mounts/<relativeMountPath>           cluster volumes: symlinks         $AZ_BATCHAI_MOUNT_ROOT
      volumes/<name>/                      empty stand-ins for volumes no data reference or --mount provides
      jobs/                                                                  $AZ_BATCHAI_JOB_TEMP_DIR
        <job>/mounts/<relativeMountPath>   job volumes: symlinks             $AZ_BATCHAI_JOB_MOUNT_ROOT
        <job>/temp/node-<n>/               per node                          $AZ_BATCHAI_JOB_TEMP
        <job>/shared/                      shared by all nodes               $AZ_BATCHAI_SHARED_JOB_TEMP
        <job>/hostfile                     OpenMPI format, ``host slots=N``  $AZ_BATCHAI_MPI_HOST_FILE

A volume's link points at ``--mount VOLUME=PATH`` (the volume's name or its relative mount path), else at its
data reference's path, else at ``volumes/<name>``. A data reference's path is ``--ref NAME=PATH``, else
``$AZUREML_DATAREFERENCE_<NAME>`` (set by Azure ML). Links left by an earlier run are replaced; data never is.

Variables (catalogue §8.1). ``$VAR`` in paths and values is expanded like a shell would (unknown: empty):

=======================================  =====================================================================
``AZ_BATCHAI_INPUT_<ID>``                the input's data reference path, else its ``path``
``AZ_BATCHAI_OUTPUT_<ID>``               the output's data reference path, else
                                         ``<pathPrefix>/<segment>/outputs[/<pathSuffix>]`` (created)
``AZ_BATCHAI_STDOUTERR_DIR``             ``<stdOutErrPathPrefix>/<segment>/stdouterr`` (created)
``AZ_BATCHAI_NUM_GPUS``                  the GPUs ``nvidia-smi -L`` lists (0 without it)
``AZ_BATCHAI_TASK_INDEX``                pytorch, caffe2: the rank; tensorflow: the index within ps or worker
``AZ_BATCHAI_PYTORCH_INIT_METHOD``       ``file://<shared temp>/pytorch_init_<uuid>``, fresh each run
                                         (external: ``tcp://$MASTER_ADDR:$MASTER_PORT`` when Azure ML set them)
``RANK``, ``LOCAL_RANK``                 pytorch, for ``torch.distributed``'s ``env://``, with ``WORLD_SIZE``,
                                         ``MASTER_ADDR`` (127.0.0.1) and ``MASTER_PORT`` (a free port)
``AZ_BATCHAI_PS_HOSTS``                  tensorflow: the parameter servers, ``127.0.0.1:<free port>,…``
``AZ_BATCHAI_WORKER_HOSTS``              tensorflow: the workers, likewise
``TF_CONFIG``                            tensorflow: ``{"cluster": …, "task": {"type", "index"}, "environment"}``
``OMPI_COMM_WORLD_*``, ``PMI_*``         MPI toolkits: rank, size, local rank
user ``environmentVariables``            their values as written (Batch AI did not expand them); a pipeline's
                                         ``{parameters.NAME}`` is replaced by ``--param NAME VALUE``
``secrets``                              the launcher's own environment variable of that name, else the Key
                                         Vault at ``$AZBAI_KEY_VAULT_URL`` (Azure ML v2, with the job's
                                         identity), else (inside Azure ML v1) ``Run.get_secret``; never
                                         written to a file or log
``AZUREML_DATAREFERENCE_<NAME>``         each data reference's path (as Azure ML sets it on a node)
=======================================  =====================================================================

Processes (catalogue §8.6): ``jobPreparation`` first, on every node, then the toolkit's process groups, each
process as ``bash -c <command>`` in its own process group, with the work directory as its working directory.
(Given ``--warm ADDRESS`` by the local engine, a command that is one plain ``python script.py ARGS`` or
``python -m module ARGS`` may instead be forked, already warm, by the engine's zygote: :class:`WarmChild`.)
Ranks go to simulated nodes in blocks of ``ceil(count / nodeCount)``. MPI toolkits with more than one rank run
under Open MPI's ``mpirun`` when it is on PATH. TensorFlow parameter servers are terminated once the workers
exit.

External mode: the rank comes from ``OMPI_COMM_WORLD_RANK``, ``PMI_RANK`` or ``RANK`` (TensorFlow:
``TF_CONFIG``'s task). Local rank 0 of each node runs ``jobPreparation``; the node's other ranks wait for its
marker file. A rank beyond the job's process count runs nothing; a parameter server stopped by a signal counts
as success.

Files in the stdouterr directory, as Batch AI named them (catalogue §8.4): ``stdout.txt``/``stderr.txt`` (MPI
toolkits, all ranks appended; customToolkit), ``stdout-<i>.txt`` (pytorch, caffe2), ``stdout-ps-<i>.txt`` and
``stdout-wk-<i>.txt`` (tensorflow), ``stdout-job_prep-<node>-<time>.txt`` and ``execution-<node>-<time>.log``.
Files are appended to, never truncated; nothing the job wrote is removed, also when it fails.

Exit status: the first non-zero exit code of a (non parameter server) process, else 0; a process killed by
signal N counts as 128+N. When one process fails the others are terminated, as mpirun does. The launcher's own
codes:

=====  =======================================================================================================
124    ``maxWallClockTime`` exceeded: every process group got SIGTERM, then SIGKILL after a grace period
125    the launcher could not start the job (a missing data reference or secret, a bad job file); nothing ran
130    the launcher got SIGINT (143: SIGTERM) and forwarded it to every process group
=====  =======================================================================================================
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

EXIT_TIMEOUT = 124
EXIT_LAUNCHER_ERROR = 125
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM

#: seconds between SIGTERM and SIGKILL when process groups are terminated
GRACE_SECONDS = 10.0
WORK_ENV = "AZ_BATCHAI_LAUNCHER_WORK"
DEFAULT_WORK = "azbai_work"
DATAREFERENCE_PREFIX = "AZUREML_DATAREFERENCE_"
RANK_MODES = ("all", "external")
#: the workspace Key Vault of an Azure ML v2 job (v2 jobs have no secrets API: the job reads Key Vault itself)
KEY_VAULT_ENV = "AZBAI_KEY_VAULT_URL"
_WORKSPACE_TOKENS = (
    ("{subscription}", "AZUREML_ARM_SUBSCRIPTION"),
    ("{resource_group}", "AZUREML_ARM_RESOURCEGROUP"),
    ("{workspace}", "AZUREML_ARM_WORKSPACE_NAME"),
)

_POLL_SECONDS = 0.05
#: how long a launcher waits for a zygote to take a warm start (:class:`WarmChild`) before it starts cold
_WARM_READY_SECONDS = 10.0
_PARAMETER_RE = re.compile(r"\{parameters\.([A-Za-z_][A-Za-z0-9_]*)\}")
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_JOB_KEYS = (
    "name",
    "std_out_err_path_prefix",
    "volumes",
    "input_directories",
    "output_directories",
    "environment_variables",
    "secrets",
    "job_preparation",
    "launch",
)
_LAUNCH_KEYS = ("toolkit", "mode", "node_count", "process_count", "groups")
_MODES = ("mpi", "per_process", "parameter_server", "master_only")


class LauncherError(Exception):
    """The job cannot be started as described; the message says what to give or fix (never a secret value)."""


# --- entry points -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: parse, :func:`run`, return the job's exit status."""
    parser = argparse.ArgumentParser(
        prog="azbai_launcher", description="Run a migrated Batch AI job in a recreated Batch AI environment."
    )
    parser.add_argument("--job", required=True, help="the plan's job section (JSON)")
    parser.add_argument("--segment", required=True, help="Batch AI's jobOutputDirectoryPathSegment")
    parser.add_argument("--work", help=f"work directory (default: ${WORK_ENV}, else ./{DEFAULT_WORK})")
    parser.add_argument(
        "--ref", action="append", default=[], metavar="NAME=PATH", help="a data reference's path"
    )
    parser.add_argument(
        "--data",
        action="append",
        nargs=2,
        default=[],
        metavar=("NAME", "PATH"),
        help="a data reference's path (the form Azure ML pipeline arguments take)",
    )
    parser.add_argument(
        "--mount", action="append", default=[], metavar="VOLUME=PATH", help="a volume's content"
    )
    parser.add_argument(
        "--param",
        action="append",
        nargs=2,
        default=[],
        metavar=("NAME", "VALUE"),
        help="a pipeline parameter: {parameters.NAME} in environment variable values becomes VALUE",
    )
    parser.add_argument(
        "--ranks", choices=RANK_MODES, default="all", help="start all processes, or only this rank"
    )
    parser.add_argument("--echo", action="store_true", help="copy every process's output to this process's")
    parser.add_argument(
        "--parent",
        type=int,
        metavar="PID",
        help="stop the job (SIGTERM) when this process, the launcher's parent, dies; exit at once if it has",
    )
    parser.add_argument(
        "--warm",
        metavar="ADDRESS",
        help="the local engine's zygote (azbai.local.warm) that may start a simple Python command already warm",
    )
    args = parser.parse_args(argv)
    if args.parent is not None:
        exit_with_parent(args.parent)
    try:
        job = load_job_file(args.job)
        work = Path(args.work or os.environ.get(WORK_ENV) or DEFAULT_WORK)
        refs = {**parse_pairs(args.ref, "--ref"), **dict(args.data)}
        mounts = parse_pairs(args.mount, "--mount")
        segment = resolve_segment(args.segment, os.environ)
        return run(
            job,
            segment,
            work,
            refs,
            mounts,
            ranks=args.ranks,
            echo=args.echo,
            params=dict(args.param),
            warm=args.warm,
        )
    except LauncherError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return EXIT_LAUNCHER_ERROR
    except MemoryError:
        print(
            "Error: the launcher ran out of memory preparing the job (is nodeCount or processCount far larger "
            "than one machine can simulate?)",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_LAUNCHER_ERROR
    except Exception as exc:  # the reason must reach the job's record, not only a traceback in a log
        import traceback

        traceback.print_exc()
        print(f"Error: the launcher failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_LAUNCHER_ERROR


def run(
    job: dict[str, Any],
    segment: str,
    work: Path,
    refs: Mapping[str, str | os.PathLike[str]],
    mounts: Mapping[str, str | os.PathLike[str]],
    ranks: str = "all",
    echo: bool = False,
    env: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    warm: str | None = None,
) -> int:
    """Recreate the Batch AI environment of ``job`` under ``work`` and run it; return its exit status.

    ``env`` is the launcher's environment (default ``os.environ``): the base of every process's environment and
    where secrets, ``$AZUREML_DATAREFERENCE_*`` and the external rank variables are read. ``warm``: the local
    engine's zygote, asked to start each simple Python command (:class:`WarmChild`); never for a job with
    secrets. Raises :class:`LauncherError` before anything runs when the job cannot be started.
    """
    base = dict(os.environ if env is None else env)
    _check_job(job)
    if ranks not in RANK_MODES:
        raise LauncherError(f"ranks must be one of {', '.join(RANK_MODES)}, not {ranks!r}")
    if not segment or segment.startswith("/") or ".." in segment.split("/"):
        raise LauncherError(f"the segment must be a relative path without '..', not {segment!r}")
    launch = job["launch"]
    wall = job.get("max_wall_clock_seconds")
    deadline = time.monotonic() + wall if wall else None
    started = time.time()
    stamp = time.strftime("%Y%m%dt%H%M%Sz", time.gmtime(started))
    layout = Layout(Path(work).absolute(), _safe_part(job["name"], "job name"))
    placement = _external_placement(job, base) if ranks == "external" else None

    problems: list[str] = []
    mounted = _mounted_volumes(job, mounts, problems)
    paths = _reference_paths(job, refs, mounted, base, problems)
    secrets = _secret_values(job, base, problems)
    if problems:
        raise LauncherError(f"cannot start job '{job['name']}':\n  - " + "\n  - ".join(problems))
    nodes = [placement.node] if placement else list(range(max(1, int(launch["node_count"]))))
    if placement is not None and base.get("AZ_BATCH_NODE_ID"):
        node_ids = {placement.node: _safe_part(base["AZ_BATCH_NODE_ID"], "AZ_BATCH_NODE_ID")}
    else:
        node_ids = {n: f"node-{n}" for n in nodes}
    try:
        links = _link_volumes(job, layout, paths, mounted)
        gpus = count_gpus(base)
        node_envs = {
            n: _job_environment(job, layout, n, segment, base, paths, secrets, gpus, params or {})
            for n in nodes
        }
        stdouterr = Path(node_envs[nodes[0]]["AZ_BATCHAI_STDOUTERR_DIR"])
        _write_hostfile(layout, launch, base if placement else None)
        log = ExecutionLog(stdouterr, node_ids, stamp)
    except OSError as exc:
        raise LauncherError(f"cannot prepare the job's directories: {exc}") from exc
    try:
        where = f"rank {placement.rank} of an external launch" if placement else "all ranks"
        log.write(
            f"job '{job['name']}' ({launch['toolkit']}, {launch['mode']}, {launch['process_count']} process(es)"
            f" on {launch['node_count']} node(s)), segment {segment}, work {layout.work}, running {where}"
        )
        for link, target in links:
            log.write(f"volume {link} -> {target}")
        supervisor = Supervisor(layout.work, log, deadline, wall, echo)
        supervisor.pid_file = layout.job_dir / "pids"
        supervisor.warm = None if secrets else warm  # a zygote never holds a secret
        with _forwarded_signals(supervisor):
            if placement is None:
                code = _run_all(job, layout, node_envs, stdouterr, node_ids, stamp, supervisor)
            else:
                node_env = node_envs[placement.node]
                code = _run_external(
                    job, layout, node_env, stdouterr, node_ids, stamp, placement, base, supervisor
                )
        log.write(f"job finished with exit code {code} after {time.time() - started:.1f} s")
        return code
    finally:
        log.close()


def resolve_segment(segment: str, env: Mapping[str, str]) -> str:
    """Fill ``{run-id}`` (how a pipeline step names its own run) from ``$AZUREML_RUN_ID``, else a fresh uuid.

    An Azure ML v2 job's command line leaves the workspace in the segment as ``{subscription}``,
    ``{resource_group}`` and ``{workspace}``; they come from ``$AZUREML_ARM_*`` and stay as written without them.
    """
    for token, name in _WORKSPACE_TOKENS:
        if token in segment and env.get(name):
            segment = segment.replace(token, env[name])
    if "{run-id}" not in segment:
        return segment
    return segment.replace("{run-id}", env.get("AZUREML_RUN_ID") or str(uuid.uuid4()))


def fill_parameters(text: str, params: Mapping[str, str]) -> str:
    """Replace ``{parameters.NAME}`` with the parameter's value; an unknown name is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise LauncherError(f"no value for the pipeline parameter '{name}' (pass --param {name} VALUE)")
        return params[name]

    return _PARAMETER_RE.sub(value, text)


def load_job_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the job section written by ``job_to_json``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise LauncherError(f"cannot read the job file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise LauncherError(f"the job file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LauncherError(f"the job file {path} must hold a JSON object (the plan's job section)")
    return data


def parse_pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    """``["NAME=PATH", …]`` → ``{NAME: PATH}``."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise LauncherError(f"{flag} {value!r}: expected NAME=PATH")
        pairs[name] = path
    return pairs


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$VAR`` and ``${VAR}`` as a shell would; unknown variables become empty."""
    return _VAR_RE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def compose_path(
    prefix: str, segment: str, tail: Sequence[str], scope: Mapping[str, str], work: Path
) -> Path:
    """Batch AI's ``<prefix>/<segment>/<tail…>`` with ``prefix`` expanded in ``scope``; relative → under ``work``."""
    path = Path(expand(prefix, scope)).joinpath(segment, *tail)
    return path if path.is_absolute() else work / path


def layout_variables(work: Path, job_name: str, node: int = 0) -> dict[str, str]:
    """The Batch AI path variables of ``node`` for a job run under ``work`` (catalogue 8.1)."""
    layout = Layout(Path(work).absolute(), job_name)
    return {
        "AZ_BATCHAI_MOUNT_ROOT": str(layout.mount_root),
        "AZ_BATCHAI_JOB_MOUNT_ROOT": str(layout.job_mount_root),
        "AZ_BATCHAI_JOB_TEMP_DIR": str(layout.jobs_dir),
        "AZ_BATCHAI_JOB_TEMP": str(layout.node_temp(node)),
        "AZ_BATCHAI_SHARED_JOB_TEMP": str(layout.shared),
        "AZ_BATCHAI_MPI_HOST_FILE": str(layout.hostfile),
    }


def user_variables(job: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, str]:
    """The job's ``environmentVariables``: as written, a pipeline's ``{parameters.NAME}`` filled in."""
    return {v["name"]: fill_parameters(v["value"], params) for v in job["environment_variables"]}


def count_gpus(env: Mapping[str, str]) -> int:
    """The number of GPUs ``nvidia-smi -L`` lists; 0 when it is missing or fails."""
    exe = shutil.which("nvidia-smi", path=env.get("PATH"))
    if exe is None:
        return 0
    try:
        result = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))


# --- the job environment ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the launcher puts Batch AI's directories under the work directory."""

    work: Path
    job: str

    @property
    def mount_root(self) -> Path:
        """``$AZ_BATCHAI_MOUNT_ROOT``."""
        return self.work / "mounts"

    @property
    def jobs_dir(self) -> Path:
        """``$AZ_BATCHAI_JOB_TEMP_DIR``."""
        return self.work / "jobs"

    @property
    def job_dir(self) -> Path:
        """This job's directory."""
        return self.jobs_dir / self.job

    @property
    def job_mount_root(self) -> Path:
        """``$AZ_BATCHAI_JOB_MOUNT_ROOT``."""
        return self.job_dir / "mounts"

    @property
    def shared(self) -> Path:
        """``$AZ_BATCHAI_SHARED_JOB_TEMP``."""
        return self.job_dir / "shared"

    @property
    def hostfile(self) -> Path:
        """``$AZ_BATCHAI_MPI_HOST_FILE``."""
        return self.job_dir / "hostfile"

    def node_temp(self, node: int) -> Path:
        """``$AZ_BATCHAI_JOB_TEMP`` of a node."""
        return self.job_dir / "temp" / f"node-{node}"

    def volume_dir(self, name: str) -> Path:
        """The empty directory that stands for a volume nothing provides."""
        return self.work / "volumes" / name


def _check_job(job: Any) -> None:
    if not isinstance(job, dict):
        raise LauncherError("the job must be a JSON object (the plan's job section)")
    missing = [k for k in _JOB_KEYS if k not in job]
    launch = job.get("launch")
    if not isinstance(launch, dict):
        launch = {}
    missing += [f"launch.{k}" for k in _LAUNCH_KEYS if k not in launch]
    if missing:
        raise LauncherError(f"the job section lacks {', '.join(missing)}; is this the plan's job section?")
    if launch["mode"] not in _MODES:
        raise LauncherError(f"launch.mode {launch['mode']!r} is not one of {', '.join(_MODES)}")


def _safe_part(name: str, what: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise LauncherError(f"the {what} {name!r} cannot name a directory")
    return name


def _mounted_volumes(
    job: dict[str, Any], mounts: Mapping[str, str | os.PathLike[str]], problems: list[str]
) -> dict[str, Path]:
    """Volume name → the ``--mount`` path given for it, by volume name or by its (unique) relative mount path."""
    chosen: dict[str, Path] = {}
    for key, path in mounts.items():
        matches = [v["name"] for v in job["volumes"] if v["name"] == key]
        matches = matches or [v["name"] for v in job["volumes"] if v["relative_mount_path"].strip("/") == key]
        if len(matches) == 1:
            chosen[matches[0]] = Path(os.path.abspath(path))
        else:
            names = ", ".join(sorted(v["name"] for v in job["volumes"])) or "none"
            why = "names several volumes" if matches else "names no volume of the job"
            problems.append(f"--mount {key}=…: {why} (volumes: {names})")
    return chosen


def _reference_paths(
    job: dict[str, Any],
    refs: Mapping[str, str | os.PathLike[str]],
    mounted: Mapping[str, Path],
    env: Mapping[str, str],
    problems: list[str],
) -> dict[str, Path]:
    """Data reference name → path, for every reference the job needs; what is missing goes to ``problems``."""
    known = {v["data_reference"] for v in job["volumes"] if v["data_reference"]}
    known |= {
        d["data_reference"]
        for d in job["input_directories"] + job["output_directories"]
        if d["data_reference"]
    }
    for name in sorted(set(refs) - known):
        problems.append(
            f"--ref {name}=…: the job has no data reference '{name}' (it has: {', '.join(sorted(known))})"
        )
    needed = {
        d["data_reference"]
        for d in job["input_directories"] + job["output_directories"]
        if d["data_reference"]
    }
    needed |= {
        v["data_reference"] for v in job["volumes"] if v["data_reference"] and v["name"] not in mounted
    }
    paths: dict[str, Path] = {}
    for name in sorted(needed):
        value = (
            refs.get(name)
            or env.get(DATAREFERENCE_PREFIX + name)
            or env.get(DATAREFERENCE_PREFIX + name.upper())
        )
        if value:
            paths[name] = Path(os.path.abspath(value))
        else:
            problems.append(
                f"data reference '{name}': give --ref {name}=PATH or set {DATAREFERENCE_PREFIX}{name}"
            )
    return paths


def _secret_values(job: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """Secret name → value: from ``env``, else (inside Azure ML) the run's Key Vault. Values are never shown."""
    values: dict[str, str] = {}
    for secret in job["secrets"]:
        name = secret["name"]
        if name in env:
            values[name] = env[name]
        elif env.get(KEY_VAULT_ENV):
            try:
                values[name] = _key_vault_secret(env[KEY_VAULT_ENV], name, env)
            except LauncherError as exc:
                problems.append(str(exc))
        elif env.get("AZUREML_RUN_ID"):
            try:
                values[name] = _azureml_secret(name)
            except LauncherError as exc:
                problems.append(str(exc))
        else:
            problems.append(
                f"secret '{name}': set the environment variable {name} (its value is never written)"
            )
    return values


def _key_vault_secret(vault_url: str, name: str, env: Mapping[str, str]) -> str:
    """A secret from Key Vault with the job's identity (Azure ML v2); azure-keyvault-secrets is imported only here.

    ``submit.py`` stored it under the name with ``_`` as ``-`` (Key Vault names allow letters, digits, dashes).
    """
    try:
        from azure.identity import DefaultAzureCredential  # type: ignore[import-not-found, unused-ignore]
        from azure.keyvault.secrets import SecretClient  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise LauncherError(
            f"secret '{name}': {KEY_VAULT_ENV} is set but azure-keyvault-secrets and azure-identity are not "
            "installed in the job's environment"
        ) from exc
    try:
        # on an AmlCompute cluster the job's managed identity is the cluster's (client id in DEFAULT_IDENTITY_CLIENT_ID)
        credential = DefaultAzureCredential(managed_identity_client_id=env.get("DEFAULT_IDENTITY_CLIENT_ID"))
        value = (
            SecretClient(vault_url=vault_url, credential=credential).get_secret(name.replace("_", "-")).value
        )
    except Exception as exc:  # azure.core raises many types; none may leak a value into the message
        raise LauncherError(
            f"secret '{name}': Key Vault {vault_url} did not return it ({type(exc).__name__})"
        ) from exc
    if value is None:
        raise LauncherError(f"secret '{name}': empty in Key Vault {vault_url}")
    return str(value)


def _azureml_secret(name: str) -> str:
    """A secret from the Azure ML workspace's Key Vault (the SDK is imported only here, only inside Azure ML)."""
    try:
        from azureml.core import Run

        value = Run.get_context().get_secret(name)
    except Exception as exc:  # the SDK raises many unrelated types; none may leak a value into the message
        raise LauncherError(f"secret '{name}': Azure ML could not return it ({type(exc).__name__})") from exc
    if value is None:
        raise LauncherError(f"secret '{name}': not in the workspace's Key Vault")
    return str(value)


def _link_volumes(
    job: dict[str, Any],
    layout: Layout,
    paths: Mapping[str, Path],
    mounted: Mapping[str, Path],
) -> list[tuple[Path, Path]]:
    """Make every volume appear at ``<root>/<relativeMountPath>``; return (link, target) pairs."""
    links = []
    for volume in job["volumes"]:
        root = layout.job_mount_root if volume["root"] == "AZ_BATCHAI_JOB_MOUNT_ROOT" else layout.mount_root
        relative = volume["relative_mount_path"].strip("/")
        if not relative or ".." in relative.split("/"):
            raise LauncherError(
                f"volume '{volume['name']}': bad relative mount path {volume['relative_mount_path']!r}"
            )
        if volume["name"] in mounted:
            target = mounted[volume["name"]]
        elif volume["data_reference"]:
            target = paths[volume["data_reference"]]
        else:
            target = layout.volume_dir(_safe_part(volume["name"], "volume name"))
        target.mkdir(parents=True, exist_ok=True)
        _replace_link(root / relative, target)
        links.append((root / relative, target))
    return links


def _replace_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target``, replacing a link (or empty directory) left by an earlier run, never data.

    The new link is renamed into place, so launchers of several local ranks can do this at the same time: what is
    there is looked at once (``lstat``, not following a link another rank may have just put there), and looked at
    again when it changed before it could be acted on.
    """
    for _ in range(5):
        try:
            mode = os.lstat(link).st_mode
        except FileNotFoundError:
            break
        if stat.S_ISLNK(mode):
            if os.readlink(link) == str(target):
                return
            break  # an earlier run's link: replaced below
        if not stat.S_ISDIR(mode):
            raise LauncherError(
                f"{link} exists and is not a link from an earlier run; move it away (nothing is deleted)"
            )
        try:
            link.rmdir()  # an empty directory; one with anything in it is data
            break
        except FileNotFoundError:
            break
        except NotADirectoryError:
            continue  # another rank's link took its place meanwhile: look again
        except OSError as exc:
            raise LauncherError(
                f"{link} exists and is not a link from an earlier run; move it away (nothing is deleted)"
            ) from exc
    link.parent.mkdir(parents=True, exist_ok=True)
    _atomic(link, lambda temporary: temporary.symlink_to(target, target_is_directory=True))


def _atomic(path: Path, create: Callable[[Path], object]) -> None:
    """Create ``path`` under a temporary name, then rename it into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    create(temporary)
    os.replace(temporary, path)


def _job_environment(
    job: dict[str, Any],
    layout: Layout,
    node: int,
    segment: str,
    base: Mapping[str, str],
    paths: Mapping[str, Path],
    secrets: Mapping[str, str],
    gpus: int,
    params: Mapping[str, str],
) -> dict[str, str]:
    """The environment every process of ``node`` starts from; creates the directories it names."""
    env = dict(base)
    env.update(layout_variables(layout.work, layout.job, node))
    env["AZ_BATCHAI_NUM_GPUS"] = str(gpus)
    for directory in (layout.mount_root, layout.job_mount_root, layout.node_temp(node), layout.shared):
        directory.mkdir(parents=True, exist_ok=True)

    def composed(prefix: str, tail: Sequence[str], scope: Mapping[str, str]) -> Path:
        return compose_path(prefix, segment, tail, scope, layout.work)

    # Batch AI set environmentVariables literally (catalogue 8.1 does not list them among the expanded fields):
    # only a pipeline's {parameters.NAME} is filled in. Two passes: paths may use user variables, and user
    # variables may name $AZ_BATCHAI_OUTPUT_<ID>.
    scope = {**env, **user_variables(job, params), **secrets}
    for d in job["input_directories"]:
        ref = d["data_reference"]
        env["AZ_BATCHAI_INPUT_" + d["id"]] = str(paths[ref]) if ref else expand(d["path"], scope)
    for d in job["output_directories"]:
        ref = d["data_reference"]
        tail = ["outputs"] + ([d["path_suffix"]] if d["path_suffix"] else [])
        path = paths[ref] if ref else composed(d["path_prefix"], tail, scope)
        path.mkdir(parents=True, exist_ok=True)
        env["AZ_BATCHAI_OUTPUT_" + d["id"]] = str(path)
    stdouterr = composed(job["std_out_err_path_prefix"], ["stdouterr"], scope)
    stdouterr.mkdir(parents=True, exist_ok=True)
    env["AZ_BATCHAI_STDOUTERR_DIR"] = str(stdouterr)
    env.update(user_variables(job, params))
    env.update(secrets)
    # as Azure ML sets them on a node: a script may read its data from $AZUREML_DATAREFERENCE_<name>
    env.update({DATAREFERENCE_PREFIX + name: str(path) for name, path in paths.items()})
    return env


def _write_hostfile(layout: Layout, launch: dict[str, Any], external_env: Mapping[str, str] | None) -> None:
    """One ``host slots=N`` line per node: ``$AZ_BATCH_HOST_LIST`` in Azure ML, else ``localhost``."""
    nodes = max(1, int(launch["node_count"]))
    hosts = ["localhost"] * nodes
    if external_env is not None and external_env.get("AZ_BATCH_HOST_LIST"):
        hosts = [h.strip() for h in external_env["AZ_BATCH_HOST_LIST"].split(",") if h.strip()]
    slots = math.ceil(int(launch["process_count"]) / nodes)
    text = "".join(f"{host} slots={slots}\n" for host in hosts)
    layout.hostfile.parent.mkdir(parents=True, exist_ok=True)
    _atomic(layout.hostfile, lambda temporary: temporary.write_text(text, encoding="utf-8"))


# --- processes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """One toolkit process: its group, its index within the group, its global rank and where it runs."""

    group: dict[str, Any]
    index: int
    rank: int
    node: int
    local_rank: int

    @property
    def role(self) -> str:
        """The group's role: ``rank``, ``ps``, ``worker`` or ``master``."""
        return str(self.group["role"])

    @property
    def label(self) -> str:
        """How the execution log names the process."""
        return "master" if self.role == "master" else f"{self.role} {self.index}"


@dataclass(frozen=True)
class Cluster:
    """What every process learns about the others."""

    world_size: int
    ps_hosts: list[str]
    worker_hosts: list[str]
    master_addr: str
    master_port: str
    init_method: str


@dataclass(frozen=True)
class Placement:
    """Where an externally started launcher sits: its rank, node and process (None: a rank with nothing to run)."""

    rank: int
    local_rank: int
    node: int
    process: Process | None


def distribute(launch: dict[str, Any]) -> list[Process]:
    """Every process of the launch, ranks in blocks of ``ceil(count / nodes)`` per node, group after group."""
    nodes = max(1, int(launch["node_count"]))
    processes: list[Process] = []
    for group in launch["groups"]:
        per_node = max(1, math.ceil(int(group["count"]) / nodes))
        for index in range(int(group["count"])):
            node = min(index // per_node, nodes - 1)
            processes.append(Process(group, index, len(processes), node, index - node * per_node))
    return processes


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _role_counts(launch: dict[str, Any]) -> tuple[int, int]:
    ps = sum(int(g["count"]) for g in launch["groups"] if g["role"] == "ps")
    return ps, sum(int(g["count"]) for g in launch["groups"] if g["role"] != "ps")


def _local_cluster(launch: dict[str, Any], layout: Layout) -> Cluster:
    ps, workers = _role_counts(launch) if launch["mode"] == "parameter_server" else (0, 0)
    ports = [f"127.0.0.1:{port}" for port in _free_ports(ps + workers + 1)]
    return Cluster(
        world_size=int(launch["process_count"]),
        ps_hosts=ports[:ps],
        worker_hosts=ports[ps : ps + workers],
        master_addr="127.0.0.1",
        master_port=ports[-1].rsplit(":", 1)[1],
        init_method=f"file://{layout.shared}/pytorch_init_{uuid.uuid4().hex}",
    )


def _process_env(
    node_env: Mapping[str, str], launch: dict[str, Any], process: Process, cluster: Cluster, external: bool
) -> dict[str, str]:
    """The environment of one process: the node's, plus what its launch mode defines (catalogue §8.6)."""
    env = dict(node_env)
    own: dict[str, str] = {}
    # External mode keeps what Azure ML's launcher already set (the real MPI world, its rendezvous, its TF_CONFIG).
    kept: dict[str, str] = {}
    mode = launch["mode"]
    if mode == "mpi":
        kept = {
            "OMPI_COMM_WORLD_RANK": str(process.rank),
            "OMPI_COMM_WORLD_SIZE": str(cluster.world_size),
            "OMPI_COMM_WORLD_LOCAL_RANK": str(process.local_rank),
            "PMI_RANK": str(process.rank),
            "PMI_SIZE": str(cluster.world_size),
        }
    elif mode == "per_process":
        own["AZ_BATCHAI_TASK_INDEX"] = str(process.rank)
        if launch["toolkit"] == "pytorch":
            own.update(
                AZ_BATCHAI_PYTORCH_INIT_METHOD=cluster.init_method,
                RANK=str(process.rank),
                WORLD_SIZE=str(cluster.world_size),
                LOCAL_RANK=str(process.local_rank),
            )
            kept.update(MASTER_ADDR=cluster.master_addr, MASTER_PORT=cluster.master_port)
    elif mode == "parameter_server":
        own.update(
            AZ_BATCHAI_PS_HOSTS=",".join(cluster.ps_hosts),
            AZ_BATCHAI_WORKER_HOSTS=",".join(cluster.worker_hosts),
            AZ_BATCHAI_TASK_INDEX=str(process.index),
        )
        spec = {
            role: hosts
            for role, hosts in (("ps", cluster.ps_hosts), ("worker", cluster.worker_hosts))
            if hosts
        }
        task = {"type": "ps" if process.role == "ps" else "worker", "index": process.index}
        kept["TF_CONFIG"] = json.dumps({"cluster": spec, "task": task, "environment": "cloud"})
    env.update(own)
    for name, value in kept.items():
        if external:
            env.setdefault(name, value)
        else:
            env[name] = value
    return env


def _file(stdouterr: Path, pattern: str, index: int) -> Path:
    return stdouterr / pattern.replace("{index}", str(index))


def _openmpi_mpirun(env: Mapping[str, str]) -> str | None:
    """``mpirun`` on PATH when it is Open MPI's (``--oversubscribe`` is an Open MPI flag)."""
    exe = shutil.which("mpirun", path=env.get("PATH"))
    if exe is None:
        return None
    try:
        result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = result.stdout + result.stderr
    return exe if "Open MPI" in text or "OpenRTE" in text else None


def _prep_task(
    command: str, node: int, env: dict[str, str], stdouterr: Path, node_id: str, stamp: str
) -> Task:
    # jobPreparation.commandLine is itself a shell command line in Batch AI: it runs through bash -c.
    return Task(
        label="job preparation",
        node=node,
        command=command,
        argv=["bash", "-c", command],
        env=env,
        stdout=stdouterr / f"stdout-job_prep-{node_id}-{stamp}.txt",
        stderr=stdouterr / f"stderr-job_prep-{node_id}-{stamp}.txt",
    )


def _toolkit_task(
    launch: dict[str, Any],
    process: Process,
    node_env: Mapping[str, str],
    cluster: Cluster,
    stdouterr: Path,
    external: bool,
) -> Task:
    group = process.group
    # A toolkit's command is a Batch AI shell command line ($VARs, ;, cd): bash expands it from the environment.
    return Task(
        label=process.label,
        node=process.node,
        command=group["command"],
        argv=["bash", "-c", group["command"]],
        env=_process_env(node_env, launch, process, cluster, external),
        stdout=_file(stdouterr, group["stdout"], process.index),
        stderr=_file(stdouterr, group["stderr"], process.index),
        primary=not (launch["mode"] == "parameter_server" and process.role == "ps"),
        rank=process.rank,
    )


def _mpirun_task(
    mpirun: str, launch: dict[str, Any], layout: Layout, env: dict[str, str], stdouterr: Path
) -> Task:
    """All ranks as one ``mpirun`` process tree; a bash prologue gives each rank its node's temp directory."""
    group = launch["groups"][0]
    count = int(group["count"])
    per_node = max(1, math.ceil(count / max(1, int(launch["node_count"]))))
    temp_root = layout.node_temp(0).parent
    prologue = (
        f"export AZ_BATCHAI_JOB_TEMP={_quote(str(temp_root))}/node-$((OMPI_COMM_WORLD_RANK / {per_node})) "
        'PMI_RANK="$OMPI_COMM_WORLD_RANK" PMI_SIZE="$OMPI_COMM_WORLD_SIZE"; exec bash -c "$1"'
    )
    root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    argv = [mpirun, "-np", str(count), "--oversubscribe", *root]
    argv += ["bash", "-c", prologue, "bash", group["command"]]
    return Task(
        label=f"mpirun -np {count}",
        node=0,
        command=group["command"],
        argv=argv,
        env=env,
        stdout=_file(stdouterr, group["stdout"], 0),
        stderr=_file(stdouterr, group["stderr"], 0),
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _run_all(
    job: dict[str, Any],
    layout: Layout,
    node_envs: dict[int, dict[str, str]],
    stdouterr: Path,
    node_ids: dict[int, str],
    stamp: str,
    supervisor: Supervisor,
) -> int:
    """Local mode: job preparation on every simulated node, then every process of the toolkit."""
    launch = job["launch"]
    if job["job_preparation"]:
        tasks = [
            _prep_task(job["job_preparation"], n, node_envs[n], stdouterr, node_ids[n], stamp)
            for n in node_envs
        ]
        code = supervisor.run(tasks)
        if code:
            if not supervisor.interrupted:
                supervisor.log.write(
                    f"job preparation failed with exit code {code}; the toolkit is not started"
                )
            return code
    if launch["mode"] == "mpi" and int(launch["process_count"]) > 1:
        mpirun = _openmpi_mpirun(node_envs[0])
        if mpirun is not None:
            return supervisor.run([_mpirun_task(mpirun, launch, layout, node_envs[0], stdouterr)])
    cluster = _local_cluster(launch, layout)
    tasks = [
        _toolkit_task(launch, p, node_envs[p.node], cluster, stdouterr, False) for p in distribute(launch)
    ]
    return supervisor.run(tasks)


# --- external mode (inside Azure ML) ------------------------------------------------------------------------

_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK")
_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "LOCAL_RANK")
_LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "LOCAL_WORLD_SIZE")
_NODE_VARS = ("NODE_RANK", "GROUP_RANK")


def _first_int(env: Mapping[str, str], names: Sequence[str]) -> int | None:
    for name in names:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def _tf_config(env: Mapping[str, str]) -> dict[str, Any] | None:
    text = env.get("TF_CONFIG")
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise LauncherError(f"TF_CONFIG is not valid JSON: {exc}") from exc
    return value if isinstance(value, dict) else None


def _external_placement(job: dict[str, Any], env: Mapping[str, str]) -> Placement:
    """This launcher's rank, from Azure ML's MPI, PyTorch or TensorFlow variables."""
    launch = job["launch"]
    processes = distribute(launch)
    tf = _tf_config(env) if launch["mode"] == "parameter_server" else None
    process: Process | None = None
    if tf is not None and isinstance(tf.get("task"), dict):
        role = "ps" if tf["task"].get("type") == "ps" else "worker"
        index = int(tf["task"].get("index", 0))
        matches = [p for p in processes if (p.role == "ps") == (role == "ps") and p.index == index]
        process = matches[0] if matches else None
        rank = process.rank if process else index
    else:
        found = _first_int(env, _RANK_VARS)
        if found is None and len(processes) > 1:
            raise LauncherError(
                f"--ranks external: none of {', '.join(_RANK_VARS)} or TF_CONFIG is set; the job has "
                f"{len(processes)} processes (use --ranks all to start them all)"
            )
        rank = found or 0
        process = processes[rank] if rank < len(processes) else None
    local_rank = _first_int(env, _LOCAL_RANK_VARS) or 0
    node = _first_int(env, _NODE_VARS)
    if node is None:
        local_size = _first_int(env, _LOCAL_SIZE_VARS)
        node = (rank - local_rank) // local_size if local_size else 0
    if process is not None:
        process = replace(process, node=node, local_rank=local_rank)
    return Placement(rank, local_rank, node, process)


def _external_cluster(launch: dict[str, Any], layout: Layout, env: Mapping[str, str], token: str) -> Cluster:
    tf = _tf_config(env) if launch["mode"] == "parameter_server" else None
    spec = tf.get("cluster", {}) if tf else {}
    addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
    init = f"tcp://{addr}:{port}" if addr and port else f"file://{layout.shared}/pytorch_init_{token}"
    return Cluster(
        world_size=int(launch["process_count"]),
        ps_hosts=list(spec.get("ps", [])),
        worker_hosts=list(spec.get("worker", [])) + list(spec.get("chief", [])),
        master_addr=addr or "127.0.0.1",
        master_port=port or "29500",
        init_method=init,
    )


def _run_token(env: Mapping[str, str]) -> str:
    """An id all ranks of one run share (names the job preparation marker)."""
    for name in ("AZUREML_RUN_ID", "OMPI_MCA_ess_base_jobid", "TORCHELASTIC_RUN_ID"):
        if env.get(name):
            return re.sub(r"[^A-Za-z0-9_.-]", "_", env[name])
    return "local"


def _run_external(
    job: dict[str, Any],
    layout: Layout,
    node_env: dict[str, str],
    stdouterr: Path,
    node_ids: dict[int, str],
    stamp: str,
    placement: Placement,
    base: Mapping[str, str],
    supervisor: Supervisor,
) -> int:
    """External mode: job preparation once per node (local rank 0), then this rank's process only."""
    launch = job["launch"]
    token = _run_token(base)
    node = placement.node
    if job["job_preparation"]:
        marker = layout.node_temp(node) / f".job_prep-{token}.done"
        if placement.local_rank == 0:
            task = _prep_task(job["job_preparation"], node, node_env, stdouterr, node_ids[node], stamp)
            code = supervisor.run([task])
            if supervisor.interrupted:
                return code
            _atomic(marker, lambda temporary: temporary.write_text(str(code), encoding="utf-8"))
        else:
            code = supervisor.wait_for(marker, node)
            if supervisor.interrupted:
                return code
        if code:
            supervisor.log.write(f"job preparation failed with exit code {code}; the toolkit is not started")
            return code
    process = placement.process
    if process is None:
        supervisor.log.write(
            f"rank {placement.rank} has no process to run (the job has {launch['process_count']})"
        )
        return 0
    cluster = _external_cluster(launch, layout, base, token)
    code = supervisor.run([_toolkit_task(launch, process, node_env, cluster, stdouterr, True)])
    if process.role == "ps" and supervisor.interrupted == "signal":
        return 0  # Batch AI ended parameter servers itself: being stopped is how a ps finishes
    return code


# --- supervision --------------------------------------------------------------------------------------------


@dataclass
class Task:
    """A process to start: ``command`` is what the plan wrote (logged), ``argv`` what runs."""

    label: str
    node: int
    command: str
    argv: list[str]
    env: dict[str, str]
    stdout: Path
    stderr: Path
    #: False for parameter servers: they are terminated once the primary processes are done
    primary: bool = True
    rank: int | None = None


@dataclass
class _Child:
    task: Task
    popen: subprocess.Popen[bytes] | WarmChild
    started: float
    pumps: list[threading.Thread] = field(default_factory=list)
    code: int | None = None


class ExecutionLog:
    """``execution-<node>-<time>.log`` per node: what started, where, exit codes, durations. Never env values."""

    def __init__(self, directory: Path, node_ids: Mapping[int, str], stamp: str) -> None:
        self._lock = threading.Lock()
        self._files: dict[int, IO[str]] = {}
        for node, node_id in node_ids.items():
            path = directory / f"execution-{node_id}-{stamp}.log"
            self._files[node] = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def write(self, message: str, node: int | None = None) -> None:
        """Add a line to one node's log, or to every node's."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        files = list(self._files.values()) if node is None or node not in self._files else [self._files[node]]
        with self._lock:
            for handle in files:
                handle.write(f"{now} {message}\n")

    def close(self) -> None:
        """Close every file."""
        for handle in self._files.values():
            handle.close()


class Supervisor:
    """Starts processes in their own process groups, waits, enforces the deadline, forwards signals."""

    def __init__(
        self, cwd: Path, log: ExecutionLog, deadline: float | None, wall: int | None, echo: bool
    ) -> None:
        self.cwd = cwd
        self.log = log
        self.deadline = deadline
        self.wall = wall
        self.echo = echo
        #: ``"timeout"`` or ``"signal"`` once the launcher stopped the job
        self.interrupted: str | None = None
        #: where the process group of every started process is appended (so a supervisor of the launcher can
        #: stop what a SIGKILLed launcher left behind)
        self.pid_file: Path | None = None
        #: a zygote's address (:class:`WarmChild`)
        self.warm: str | None = None
        self.signal_received: int | None = None
        self._echo_lock = threading.Lock()

    def run(self, tasks: Sequence[Task]) -> int:
        """Start ``tasks`` and wait for the primary ones; the first non-zero exit code (else 0), or 124/130/143."""
        stop = self._stop_code()
        if stop is not None:
            return stop
        children: list[_Child] = []
        try:
            for task in tasks:
                children.append(self._start(task))
        except LauncherError:
            self._terminate(children)
            raise
        primaries = [c for c in children if c.task.primary] or children
        failure = 0
        while True:
            for child in children:
                if child.code is None and child.popen.poll() is not None:
                    self._finished(child)
                    if child.code and child.task.primary and not failure:
                        failure = child.code
                        others = [c for c in children if c.code is None]
                        if others:
                            self.log.write(
                                f"{child.task.label} failed: terminating the other processes (as mpirun)"
                            )
                            self._terminate(others)
            if all(c.code is not None for c in primaries):
                break
            stop = self._stop_code()
            if stop is not None:
                self._terminate(children)
                self._join(children)
                return stop
            _wait_for_an_exit([c.popen for c in children if c.code is None], _POLL_SECONDS)
        if any(c.code is None for c in children):
            self.log.write("the workers are done: terminating the parameter servers")
        self._terminate(children)  # parameter servers, and anything a finished process left in its group
        self._join(children)
        return failure

    def wait_for(self, marker: Path, node: int) -> int:
        """Wait until local rank 0 has written ``marker`` (job preparation's exit code)."""
        self.log.write(f"waiting for job preparation on local rank 0 ({marker.name})", node)
        while not marker.exists():
            stop = self._stop_code()
            if stop is not None:
                return stop
            time.sleep(0.2)
        text = marker.read_text(encoding="utf-8").strip()
        return int(text) if text.isdigit() else 1

    def _stop_code(self) -> int | None:
        if self.signal_received is not None:
            if self.interrupted is None:
                self.interrupted = "signal"
                name = signal.Signals(self.signal_received).name
                self.log.write(f"the launcher received {name}: terminating every process")
            return 128 + self.signal_received
        if self.deadline is not None and time.monotonic() >= self.deadline:
            if self.interrupted is None:
                self.interrupted = "timeout"
                reason = f"maxWallClockTime ({self.wall} s) exceeded: terminating every process"
                self.log.write(reason)
                print(f"azbai launcher: {reason}", file=sys.stderr, flush=True)
            return EXIT_TIMEOUT
        return None

    def _start(self, task: Task) -> _Child:
        task.stdout.parent.mkdir(parents=True, exist_ok=True)
        out, err = _open_append(task.stdout), _open_append(task.stderr)
        target = subprocess.PIPE if self.echo else None
        try:
            popen: subprocess.Popen[bytes] | WarmChild | None = None
            if self.warm and not self.echo:
                popen = WarmChild.start(self.warm, task, self.cwd, out, err)
            if popen is None:
                popen = subprocess.Popen(
                    task.argv,
                    cwd=str(self.cwd),
                    env=task.env,
                    stdin=subprocess.DEVNULL,
                    stdout=target or out,
                    stderr=target or err,
                    start_new_session=True,  # its own process group: terminated as a whole
                    preexec_fn=die_with_parent(),  # and stopped if the launcher itself is killed
                )
        except OSError as exc:
            os.close(out)
            os.close(err)
            raise LauncherError(f"cannot start {task.label} ({task.argv[0]}): {exc.strerror or exc}") from exc
        child = _Child(task, popen, time.monotonic())
        if self.pid_file is not None:
            with contextlib.suppress(OSError), open(self.pid_file, "a", encoding="utf-8") as pids:
                pids.write(f"{popen.pid}\n")
        if isinstance(popen, subprocess.Popen) and self.echo:
            child.pumps = [
                self._pump(popen.stdout, out, sys.stdout),  # type: ignore[arg-type]
                self._pump(popen.stderr, err, sys.stderr),  # type: ignore[arg-type]
            ]
        else:
            os.close(out)
            os.close(err)
        rank = "" if task.rank is None else f", rank {task.rank}"
        self.log.write(
            f"started {task.label} (pid {popen.pid}, node {task.node}{rank}): {task.command}", task.node
        )
        return child

    def _pump(self, source: IO[bytes], fd: int, sink: IO[str]) -> threading.Thread:
        """Copy a process's output to its file and, line by line, to the launcher's own stream."""

        def copy() -> None:
            try:
                for line in iter(source.readline, b""):
                    os.write(fd, line)
                    with self._echo_lock:
                        try:
                            if hasattr(sink, "buffer"):
                                sink.buffer.write(line)
                            else:
                                sink.write(line.decode("utf-8", "replace"))
                            sink.flush()
                        except (OSError, ValueError):
                            pass  # a closed launcher stream must not stop the copy to the file
            finally:
                os.close(fd)
                source.close()

        thread = threading.Thread(target=copy, daemon=True)
        thread.start()
        return thread

    def _finished(self, child: _Child) -> None:
        returncode = child.popen.returncode
        assert returncode is not None  # polled before
        child.code = returncode if returncode >= 0 else 128 - returncode
        seconds = time.monotonic() - child.started
        task = child.task
        self.log.write(
            f"{task.label} (pid {child.popen.pid}) exited with code {child.code} after {seconds:.1f} s",
            task.node,
        )

    def _alive(self, child: _Child) -> bool:
        """Whether anything of the child's process group still runs (reaping the child when it has exited)."""
        if child.code is None and child.popen.poll() is not None:
            self._finished(child)
        try:
            os.killpg(child.popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _terminate(self, children: Sequence[_Child]) -> None:
        """SIGTERM every live process group, SIGKILL what is left after the grace period."""
        live = [c for c in children if self._alive(c)]
        for child in live:
            _signal_group(child.popen.pid, signal.SIGTERM)
        end = time.monotonic() + GRACE_SECONDS
        while live and time.monotonic() < end:
            time.sleep(_POLL_SECONDS)
            live = [c for c in live if self._alive(c)]
        for child in live:
            self.log.write(
                f"{child.task.label} still runs after {GRACE_SECONDS:g} s: SIGKILL", child.task.node
            )
            _signal_group(child.popen.pid, signal.SIGKILL)
        end = time.monotonic() + 5
        while live and time.monotonic() < end:
            time.sleep(_POLL_SECONDS)
            live = [c for c in live if self._alive(c)]

    def _join(self, children: Sequence[_Child]) -> None:
        for child in children:
            for pump in child.pumps:
                pump.join(timeout=5)


#: a word of a command line that bash would give to the command unchanged but for ``$NAME``/``${NAME}``
_PLAIN_WORD = re.compile(r"(?:[A-Za-z0-9_./:=,+@%-]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})+")
#: what would make bash do more with a command line than run its one command (a startup file, exported
#: functions, options, another field separator)
_SHELL_ENV = re.compile(r"BASH_ENV|ENV|IFS|SHELLOPTS|BASHOPTS|BASH_FUNC_.*")


def plain_command(argv: Sequence[str], env: Mapping[str, str]) -> list[str] | None:
    """The words ``bash -c COMMAND`` would run, where COMMAND is one simple command of plain words and
    variables set to values without blanks or wildcards; None for anything else (quotes, operators,
    redirections, globs, assignments, an unset variable), which only bash itself may interpret."""
    if len(argv) != 3 or argv[:2] != ["bash", "-c"] or any(_SHELL_ENV.fullmatch(name) for name in env):
        return None
    words = argv[2].split(" ")
    if "\n" in argv[2] or "\t" in argv[2] or not all(_PLAIN_WORD.fullmatch(w) for w in words if w):
        return None
    expanded = []
    for word in (w for w in words if w):
        values = [env.get(m.group(1) or m.group(2)) for m in _VAR_RE.finditer(word)]
        if any(v is None or not v or re.search(r"[\s*?\[]", v) for v in values):
            return None
        expanded.append(_VAR_RE.sub(lambda m: env[m.group(1) or m.group(2)], word))
    if not expanded or "=" in expanded[0]:
        return None
    return expanded


def _ignored_in_a_child() -> list[int]:
    """The signals that a child started now would find ignored: what this process ignores (``nohup`` ignores
    SIGHUP; an ignored signal stays ignored across ``exec``, and bash leaves it so), less SIGPIPE and SIGXFSZ,
    which ``subprocess`` gives its children back as defaults (Python ignores them again at its start)."""
    restored = {getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, name)}
    ignored = []
    for signum in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError):
            if signum not in restored and signal.getsignal(signum) == signal.SIG_IGN:
                ignored.append(int(signum))
    return ignored


class WarmChild:
    """A job's process started by the local engine's zygote (``azbai.local.warm``) instead of ``bash -c``: what
    the supervisor uses of a ``Popen`` (``pid``, ``poll``, ``wait``, ``returncode``).

    Only for a :func:`plain_command` that runs a Python script or module; the zygote forks it only where it would
    behave as a fresh interpreter (same interpreter, same environment but for the job's own variables, nothing
    shadowed), else it refuses and the command starts as always. The process is in its own session, as a
    child of the launcher is; its exit status comes over the socket; if the launcher dies the zygote sends it
    SIGTERM, as ``PR_SET_PDEATHSIG`` would.
    """

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self.pid = pid
        self.returncode: int | None = None

    @classmethod
    def start(cls, address: str, task: Task, cwd: Path, out: int, err: int) -> WarmChild | None:
        """Ask the zygote at ``address`` to start ``task``; None when it refuses or cannot be reached."""
        words = plain_command(task.argv, task.env)
        if not words or len(words) < 2 or (words[1].startswith("-") and words[1] != "-m"):
            return None
        executable = (
            words[0] if "/" in words[0] else shutil.which(words[0], path=task.env.get("PATH", os.defpath))
        )
        if executable is None:
            return None
        request = {
            "executable": executable,
            "command": executable,  # bash's $_
            "args": words[1:],
            "env": task.env,
            "cwd": str(cwd),
            "death_signal": int(signal.SIGTERM),
        }
        return cls.request(address, request, out, err)

    @classmethod
    def request(cls, address: str, request: dict[str, Any], out: int, err: int) -> WarmChild | None:
        """Send the zygote ``request`` (``azbai.local.warm``'s fields) with stdin from /dev/null, ``out`` and
        ``err``; None when it refuses or cannot be reached."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            sock.settimeout(_WARM_READY_SECONDS)
            sock.connect("\0" + address)
            fds = array.array("i", [devnull, out, err])
            # what a child started here would inherit: the ignored signals, and this thread's signal mask
            blocked = sorted(int(signum) for signum in signal.pthread_sigmask(signal.SIG_BLOCK, []))
            request = {**request, "ignored": _ignored_in_a_child(), "blocked": blocked}
            sock.sendmsg([json.dumps(request).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            if "ready" not in json.loads(sock.recv(65536) or b"{}"):
                sock.close()
                return None
            # Past this point the zygote forks: wait for the pid however long it takes, or the job would run twice
            sock.settimeout(None)
            sock.sendall(b"go")
            reply = json.loads(sock.recv(65536) or b"{}")
        except (OSError, ValueError):
            sock.close()
            return None
        finally:
            os.close(devnull)
        if not isinstance(reply.get("pid"), int):
            sock.close()
            return None
        return cls(sock, reply["pid"])

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def fileno(self) -> int:
        """Readable when the exit status has come (or the zygote is gone)."""
        return self._sock.fileno()

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._sock], [], [], 0)[0]:
            self._read()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._sock], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(["warm", str(self.pid)], timeout or 0.0)
            self._read()
        assert self.returncode is not None
        return self.returncode

    def _read(self) -> None:
        try:
            data = self._sock.recv(4096)
            status = json.loads(data).get("status") if data else None
        except (OSError, ValueError):
            status = None
        # no status: the zygote died, and the job with it (its death signal): as killed
        self.returncode = int(status) if isinstance(status, int) else -signal.SIGKILL
        self._sock.close()


def _wait_for_an_exit(processes: Sequence[subprocess.Popen[bytes] | WarmChild], timeout: float) -> None:
    """Sleep until one of ``processes`` (children not yet reaped) exits, or ``timeout`` passes.

    A process's pidfd (Linux 5.3+) turns readable when it exits, so a step ends when its processes do, not at the
    next poll (50 ms later, half of that on average, per process that a step starts); a :class:`WarmChild`'s
    socket when its exit status comes. Elsewhere: a plain sleep.
    """
    fds: list[int] = []
    opened: list[int] = []
    try:
        for process in processes:
            if isinstance(process, WarmChild):
                fds.append(process.fileno())
            else:
                opened.append(os.pidfd_open(process.pid))
                fds.append(opened[-1])
    except (AttributeError, OSError):  # not Linux, an old kernel, or already reaped: poll as before
        for fd in opened:
            os.close(fd)
        time.sleep(timeout)
        return
    try:
        select.select(fds, [], [], timeout)
    finally:
        for fd in opened:
            os.close(fd)


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up before any fork; ``None`` off Linux or where ctypes cannot reach it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _set_death_signal(prctl: Callable[..., int], parent: int, signum: int) -> None:
    prctl(1, signum)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the prctl: this process was already re-parented
        os._exit(EXIT_SIGTERM)


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``signum`` when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    ``None`` elsewhere. A child whose parent died before the call exits at once.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    return lambda: _set_death_signal(prctl, parent, signum)


def exit_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Get ``signum`` when ``parent`` dies, as :func:`die_with_parent` arranges, but set from the child itself.

    A ``preexec_fn`` makes `subprocess` fork the whole parent instead of its ``vfork``: 45 ms a start from a
    1.2 GB process (the local engine in a notebook or benchmark that imported torch) against 0.3 ms. ``parent``
    closes the race: a parent that died before the ``prctl`` is no longer this process's parent, so it exits
    now. No-op off Linux.
    """
    prctl = _prctl()
    if prctl is not None:
        _set_death_signal(prctl, parent, signum)


def _open_append(path: Path) -> int:
    # O_APPEND: every rank of an MPI toolkit writes to the same stdout.txt, lines interleaved as in Batch AI.
    return os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@contextlib.contextmanager
def _forwarded_signals(supervisor: Supervisor) -> Iterator[None]:
    """SIGTERM and SIGINT stop the job: the supervisor forwards them to every process group."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if supervisor.signal_received is None:
            supervisor.signal_received = signum

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


if __name__ == "__main__":
    sys.exit(main())
