"""Run a plan's pipeline locally: steps in dependency order, each through the launcher, reused when unchanged.

A run lives in ``<workspace>/pipelines/<pipeline>/runs/<run>/``::

    run.json                 parameters, state of the run and of each step
    data/<name>/             pipeline data: what a step produced for later steps
    params/<name>/<file>     data-path parameters, downloaded from their datastore
    steps/<step>/logs/       stdout/stderr of parallel steps (job steps log where their job.json says)

Each job step is a local job (``azbai job show -n <run>-<step>``). A parallel step is a job too: the launcher starts
``node_count`` processes of :mod:`azbai.local.parallel` with ``process_count_per_node`` workers each, which share
the mini-batches and call the entry script's ``init()`` once per worker and ``run()`` per mini-batch. Until the step
succeeds its progress is kept per input content, so a rerun after a crash only does the mini-batches that are
missing; then it moves to the run's ``steps/<step>/parallel/`` (``state/summary.json``: which worker did what).

Reuse, as Azure ML does it: a step whose definition, parameters, code and input data are unchanged is not run
again; its outputs are copied from the run that produced them, which the cache names
(``<workspace>/pipelines/<pipeline>/cache/<fingerprint>/done.json``, with each output file's size and modification
time: if that run's outputs are gone or changed, the step runs). Data references count by datastore path (like
Azure ML), pipeline data and data-path parameters by content, code by the content of the scripts the step's
commands name and of a parallel step's source directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from azbai.errors import JobFailed, PipelineError, StorageError
from azbai.fsutil import code_files
from azbai.local import transfer
from azbai.local.jobs import JobBook, JobRecord, now
from azbai.local.parallel import FORK_ENV, WARM_ENV, WarmPool, WarmServer, prestart
from azbai.local.records import load_record, save_record, strict_fields
from azbai.local.runner import (
    JOB_WORK_ENV,
    LOCAL_RESOURCE_GROUP,
    LOCAL_SUBSCRIPTION,
    LOCAL_WORKSPACE,
    JobRunner,
    job_environment,
    open_datastore,
)
from azbai.local.stores import iter_local_files
from azbai.local.warm import CommandPool
from azbai.local.workspace import Workspace
from azbai.plan.model import (
    SEGMENT_TEMPLATE,
    Distribution,
    InputDirectory,
    Job,
    Launch,
    LaunchMode,
    MountRoot,
    OutputDirectory,
    ParallelStep,
    ParameterKind,
    Plan,
    ProcessGroup,
    Step,
    Volume,
    VolumeKind,
)
from azbai.plan.serialize import job_to_json, plan_to_json, to_dict

log = logging.getLogger(__name__)

#: the format of a run's ``run.json``
RUN_FORMAT = 1

#: set to 1 in every step's environment (unless the caller set it): the pipeline data a step writes is read by
#: later steps on this machine, not through a datastore, so a step may choose a format for that (the style
#: recipe's frames: uncompressed instead of JPEG)
LOCAL_DATA_ENV = "AZBAI_PIPELINE_DATA_LOCAL"

#: called with (step name, state) as a run progresses: "running", "succeeded", "reused", "failed"
Progress = Callable[[str, str], None]


@dataclass
class StepState:
    """What happened to one step in a run."""

    state: str = "waiting"
    job: str | None = None
    reused: bool = False
    fingerprint: str | None = None
    started: str | None = None
    ended: str | None = None
    exit_code: int | None = None


@dataclass
class PipelineRun:
    """A local pipeline run (``run.json``)."""

    pipeline: str
    run_id: str
    directory: str
    parameters: dict[str, str]
    state: str = "running"
    started: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="microseconds")
    )
    ended: str | None = None
    steps: dict[str, StepState] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The run's directory."""
        return Path(self.directory)

    def data_dir(self, name: str) -> Path:
        """Where the pipeline data ``name`` of this run is."""
        return self.path / "data" / name

    def save(self) -> None:
        """Write ``run.json`` atomically, with its format number."""
        save_record(self.path / "run.json", asdict(self), RUN_FORMAT)

    @classmethod
    def load(cls, directory: Path) -> PipelineRun:
        """Read ``run.json``; :class:`PipelineError` for a stale or foreign one."""

        def build(data: dict[str, Any]) -> PipelineRun:
            data = strict_fields(cls, data)
            data["steps"] = {k: StepState(**strict_fields(StepState, v)) for k, v in data["steps"].items()}
            return cls(**data)

        return load_record(
            directory / "run.json",
            RUN_FORMAT,
            "pipeline run",
            PipelineError,
            build,
            hint=f"remove the directory {directory} to forget that run",
        )


class PipelineRunner:
    """Runs the steps of a pipeline plan locally."""

    def __init__(
        self,
        workspace: Workspace,
        plan: Plan,
        base_dir: Path,
        *,
        reuse: bool = True,
        warm_pool: WarmPool | None = None,
        commands: CommandPool | None = None,
    ) -> None:
        """``base_dir`` is where the pipeline file is: parallel steps' source directories are relative to it.

        ``warm_pool``: where the fork servers started ahead of parallel steps come from, for a runner that runs
        again and again (a trigger's); without one each is a fresh interpreter (:func:`prestart`).
        ``commands``: the zygotes that start the steps' simple Python commands warm (:mod:`azbai.local.warm`),
        kept from run to run; without it each run has its own, for its later steps."""
        self.workspace = workspace.ensure()
        self.plan = plan
        self.base_dir = base_dir
        self.reuse = reuse
        self.warm_pool = warm_pool
        self.commands = commands
        self._commands: CommandPool | None = None
        self.home = workspace.pipelines_dir / plan.name

    def run(
        self,
        parameters: dict[str, str] | None = None,
        *,
        run_id: str | None = None,
        progress: Progress | None = None,
    ) -> PipelineRun:
        """Run every step; :class:`PipelineError` (with the run kept) when a step fails."""
        values = self._parameters(parameters or {})
        if run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", run_id):
            raise PipelineError(
                f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 64, starting "
                "alphanumeric)"
            )
        run_id = (
            run_id
            or f"run-{now().replace(':', '').replace('-', '').replace('+0000', '')}-{uuid.uuid4().hex[:6]}"
        )
        directory = self.home / "runs" / run_id
        if directory.exists():
            raise PipelineError(f"pipeline {self.plan.name!r} already has a run named {run_id!r}")
        directory.mkdir(parents=True)
        run = PipelineRun(self.plan.name, run_id, str(directory), values)
        run.steps = {step.name: StepState() for step in self.plan.steps}
        run.save()
        report = progress or (lambda step, state: None)
        warm: dict[str, WarmServer | None] = {}
        self._commands = self.commands if self.commands is not None else CommandPool()
        try:
            refs = self._parameter_data(run)
            steps = self.plan.steps
            for index, step in enumerate(steps):
                state = run.steps[step.name]
                state.started, state.state = _stamp(), "running"
                run.save()
                report(step.name, "running")
                following = steps[index + 1] if index + 1 < len(steps) else None
                if isinstance(following, ParallelStep):
                    # its fork server imports (torch: ~1 s) while this step runs
                    warm[following.name] = self._prestart(run, following)
                self._run_step(run, step, refs, state, warm.pop(step.name, None))
                state.ended = _stamp()
                run.save()
                report(step.name, state.state)
            run.state = "succeeded"
        except BaseException:
            run.state = "failed"
            raise
        finally:
            for server in warm.values():
                if server is not None:
                    server.close()
            if self.commands is None:
                self._commands.close()
            run.ended = _stamp()
            run.save()
        return run

    # -- parameters ------------------------------------------------------------------------------------------------

    def _parameters(self, given: dict[str, str]) -> dict[str, str]:
        known = {p.name: p for p in self.plan.parameters}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise PipelineError(
                f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(known) or 'none'})"
            )
        values = {name: given.get(name, p.default) for name, p in known.items()}
        for name, parameter in known.items():
            if parameter.kind is ParameterKind.DATA_PATH:
                values[name] = check_datastore_path(values[name], what=f"parameter {name!r}")
        return values

    def _parameter_data(self, run: PipelineRun) -> dict[str, Path]:
        """Download each data-path parameter's file (or folder) into the run."""
        refs: dict[str, Path] = {}
        for parameter in self.plan.parameters:
            if parameter.kind is not ParameterKind.DATA_PATH or parameter.datastore is None:
                continue
            store = open_datastore(self.workspace, self.plan.datastore(parameter.datastore))
            path = run.parameters[parameter.name]
            target = run.path / "params" / parameter.name
            target.mkdir(parents=True, exist_ok=True)
            try:
                if store.root_exists() and store.exists(path):
                    local = target / Path(path).name
                    store.download_file(path, local)
                    refs[parameter.name] = local
                    continue
                report = (
                    transfer.download(store, path.rstrip("/") + "/", target) if store.root_exists() else None
                )
            except StorageError as exc:
                raise PipelineError(
                    f"parameter {parameter.name!r}: cannot read {store.url_for(path)}: {exc}"
                ) from exc
            if report is None or report.files == 0:
                raise PipelineError(f"parameter {parameter.name!r}: nothing at {store.url_for(path)}")
            refs[parameter.name] = target
        return refs

    # -- steps -----------------------------------------------------------------------------------------------------

    def _step_environment(self) -> tuple[dict[str, str], tuple[str, ...]]:
        """The environment a step's runner gets, and the names of it the job keeps (besides the base)."""
        env = {**os.environ, "AZBAI_WORKSPACE": str(self.workspace.root)}
        env.setdefault(LOCAL_DATA_ENV, "1")  # 0 from the caller: the steps behave as on Azure ML
        return env, (LOCAL_DATA_ENV, FORK_ENV)

    def _prestart(self, run: PipelineRun, step: ParallelStep) -> WarmServer | None:
        """A fork server for ``step``, started now in the environment its job will have (:func:`prestart`),
        marked as its job's (:data:`JOB_WORK_ENV`) for whoever stops what a dead runner left."""
        entry = (self.base_dir / step.source_directory).resolve() / step.entry_script
        if not entry.is_file():
            return None  # the step itself says so
        env, passthrough = self._step_environment()
        work = JobBook(self.workspace).directory(self.plan.experiment, _job_name(run, step)) / "work"
        start = self.warm_pool.prestart if self.warm_pool is not None else prestart
        return start(entry, {**job_environment(env, passthrough), JOB_WORK_ENV: str(work)})

    def _run_step(
        self,
        run: PipelineRun,
        step: Step | ParallelStep,
        refs: dict[str, Path],
        state: StepState,
        warm: WarmServer | None = None,
    ) -> None:
        try:
            self._run_step_job(run, step, refs, state, warm)
        finally:
            if warm is not None:
                warm.close()

    def _run_step_job(
        self,
        run: PipelineRun,
        step: Step | ParallelStep,
        refs: dict[str, Path],
        state: StepState,
        warm: WarmServer | None,
    ) -> None:
        produced = [d.name for d in self.plan.pipeline_data if d.producer == step.name]
        fingerprint = self._fingerprint(step, run, refs)
        state.fingerprint = fingerprint
        cache = self.home / "cache" / fingerprint
        if self.reuse and step.allow_reuse and self._reuse(cache, produced, run):
            state.state, state.reused, state.exit_code = "reused", True, 0
            return
        for name in produced:
            run.data_dir(name).mkdir(parents=True, exist_ok=True)
        job, plan, extra_mounts = self._job_for(step, run)
        extra_refs = {**refs, **{d.name: run.data_dir(d.name) for d in self.plan.pipeline_data}}
        if isinstance(step, ParallelStep):
            # progress and output are kept per input content: a rerun after a crash resumes where it stopped
            work = self.home / "parallel" / fingerprint
            (work / "state").mkdir(parents=True, exist_ok=True)
            (work / "output").mkdir(parents=True, exist_ok=True)
            extra_refs["parallel_state"] = work / "state"
            extra_refs[step.output] = work / "output"
        record = self._record(run, step, plan, job)
        state.job = record.name
        runner = JobRunner(
            self.workspace,
            record,
            extra_refs=extra_refs,
            params={
                p.name: run.parameters[p.name] for p in self.plan.parameters if p.kind is ParameterKind.STRING
            },
            extra_mounts=extra_mounts,
            commands=self._commands,
        )
        env, passthrough = self._step_environment()
        if warm is not None and warm.listening():
            env[WARM_ENV] = warm.address
            passthrough += (WARM_ENV,)
        code = runner.run(env=env, passthrough=passthrough)
        state.exit_code = code
        if code != 0:
            state.state = "failed"
            record = record.refresh()
            raise JobFailed(
                f"step {step.name!r} of pipeline {self.plan.name!r} failed with exit code {code}"
                + (f": {'; '.join(record.errors)}" if record.errors else "")
                + f"; logs: azbai job file list -n {record.name} -e {record.experiment}",
                code,
            )
        state.state = "succeeded"
        if isinstance(step, ParallelStep):
            # The progress served a rerun after a crash; left in place after success it would make a later run
            # of the same input skip the work (reuse off or not), so it moves into this run's record, and the
            # output into the run's data (a rename: same file system, no copy).
            target = run.data_dir(step.output)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(extra_refs[step.output]), str(target))
            shutil.move(str(work), str(run.path / "steps" / step.name / "parallel"))
        if step.allow_reuse:
            # As in Azure ML, a later run that reuses the step gets this run's outputs: the cache records where
            # they are and each file's size and modification time (not a copy of them, which cost a copy of every
            # frame of the style recipe in every run, reused or not)
            cache.mkdir(parents=True, exist_ok=True)
            outputs = {name: _signature(run.data_dir(name)) for name in produced}
            done = {"run": run.run_id, "step": step.name, "outputs": outputs}
            (cache / "done.json").write_text(json.dumps(done), encoding="utf-8")

    def _reuse(self, cache: Path, produced: list[str], run: PipelineRun) -> bool:
        """Copy a step's outputs recorded in ``cache`` into ``run``; False where there are none, or they changed."""
        try:
            done = json.loads((cache / "done.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(done, dict):
            return False
        recorded, source_run = done.get("outputs"), str(done.get("run"))
        if not (recorded is None or isinstance(recorded, dict)) or Path(source_run).name != source_run:
            return False
        if recorded is None:  # recorded by an earlier azbai: the cache holds copies of the outputs
            sources = {name: cache / name for name in produced}
        else:
            sources = {name: self.home / "runs" / source_run / "data" / name for name in produced}
        changed = [
            name
            for name in produced
            if not sources[name].is_dir()
            or (recorded is not None and _signature(sources[name]) != recorded.get(name))
        ]
        if changed:
            log.info(
                "step %s: the outputs of run %s it would reuse (%s) are gone or changed since; running it",
                done.get("step"),
                done.get("run"),
                ", ".join(changed),
            )
            return False
        for name in produced:
            _copy_tree(sources[name], run.data_dir(name))
        return True

    def _job_for(self, step: Step | ParallelStep, run: PipelineRun) -> tuple[Job, Plan, dict[str, Path]]:
        """The job a step runs, and a one-step plan for its record."""
        if isinstance(step, Step):
            return step.job, self.plan, {}
        logs = run.path / "steps" / step.name / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        source = (self.base_dir / step.source_directory).resolve()
        entry = source / step.entry_script
        if not entry.is_file():
            raise PipelineError(f"step {step.name!r}: no entry script {entry}")
        values = run.parameters
        filled = [
            re.sub(r"\{parameters\.(\w+)\}", lambda m: values[str(m.group(1))], a) for a in step.arguments
        ]
        arguments = " ".join(
            shlex.quote(a) for a in filled
        )  # quoted: a parameter value never becomes shell syntax
        command = (
            f"{shlex.quote(sys.executable)} -m azbai.local.parallel --entry-script {shlex.quote(str(entry))} "
            "--input $AZ_BATCHAI_INPUT_INPUT --output $AZ_BATCHAI_OUTPUT_OUTPUT --state $AZ_BATCHAI_INPUT_STATE "
            f"--mini-batch-size {step.mini_batch_size} --error-threshold {step.error_threshold} "
            f"--max-retries {step.max_retries} --timeout {step.run_invocation_timeout} "
            f"--workers {step.process_count_per_node}" + (f" -- {arguments}" if arguments else "")
        )
        # one supervisor per node with its processes as workers: on Linux they fork from one parent that imported
        # the entry script once (azbai.local.parallel's fork server)
        count = step.node_count
        job = Job(
            name=step.name,
            node_count=step.node_count,
            std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            volumes=(Volume("logs", VolumeKind.UNDESCRIBED, MountRoot.JOB, "logs", None, "parallel step"),),
            input_directories=(
                InputDirectory("INPUT", step.input, step.input),
                InputDirectory("STATE", "parallel_state", "parallel_state"),
            ),
            output_directories=(OutputDirectory("OUTPUT", step.output, None, step.output),),
            environment_variables=(),
            secrets=(),
            job_preparation=None,
            launch=Launch(
                "parallel",
                LaunchMode.PER_PROCESS,
                step.node_count,
                count,
                (ProcessGroup("rank", count, command, "stdout-{index}.txt", "stderr-{index}.txt"),),
                Distribution.NONE,
            ),
        )
        return job, self.plan, {"logs": logs}

    def _record(self, run: PipelineRun, step: Step | ParallelStep, plan: Plan, job: Job) -> JobRecord:
        book = JobBook(self.workspace)
        name = _job_name(run, step)
        record = book.create(plan.experiment, name)
        record.segment = SEGMENT_TEMPLATE.format(
            subscription=LOCAL_SUBSCRIPTION,
            resource_group=LOCAL_RESOURCE_GROUP,
            workspace=LOCAL_WORKSPACE,
            experiment=plan.experiment,
            job=name,
            job_uuid=str(uuid.uuid4()),
        )
        record.tool_type = job.launch.toolkit
        record.node_count = job.node_count
        record.source = f"pipeline {plan.name}, run {run.run_id}, step {step.name}"
        (record.path / "plan.json").write_text(plan_to_json(plan), encoding="utf-8")
        (record.path / "azbai_job.json").write_text(job_to_json(job), encoding="utf-8")
        record.save()
        return record

    # -- reuse -----------------------------------------------------------------------------------------------------

    def _fingerprint(self, step: Step | ParallelStep, run: PipelineRun, refs: dict[str, Path]) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps(to_dict(step), sort_keys=True).encode())
        names = step.data_references if isinstance(step, Step) else (step.input,)
        # only the parameters the step uses: a change of another one must not run it again
        used = set(re.findall(r"\{parameters\.(\w+)\}", json.dumps(to_dict(step)))) | set(names)
        digest.update(
            json.dumps({k: v for k, v in run.parameters.items() if k in used}, sort_keys=True).encode()
        )
        produced = {d.name for d in self.plan.pipeline_data if d.producer == step.name}
        for name in names:
            if name in produced:
                continue
            if name in refs:
                digest.update(_content_digest(refs[name]).encode())
            elif any(d.name == name for d in self.plan.pipeline_data):
                digest.update(_content_digest(run.data_dir(name)).encode())
            else:
                ref = self.plan.data_reference(name)
                digest.update(json.dumps(to_dict(ref), sort_keys=True).encode())
        for path in self._code(step):
            digest.update(_content_digest(path, code_files).encode())
        return digest.hexdigest()[:32]

    def _code(self, step: Step | ParallelStep) -> list[Path]:
        """The files that are the step's code: a parallel step's source directory, the scripts a job names."""
        if isinstance(step, ParallelStep):
            return [(self.base_dir / step.source_directory).resolve()]
        texts = [g.command for g in step.job.launch.groups] + [step.job.job_preparation or ""]
        paths = []
        for volume in step.job.volumes:
            if volume.data_reference is None:
                continue
            ref = self.plan.data_reference(volume.data_reference)
            store = open_datastore(self.workspace, self.plan.datastore(ref.datastore))
            pattern = rf"\$\{{?{volume.root.value}\}}?/{re.escape(volume.relative_mount_path)}/([\w./-]+\.(?:py|sh))"
            for text in texts:
                for rel in re.findall(pattern, text):
                    path = "/".join(p for p in (ref.path_on_datastore, rel) if p)
                    if store.kind == "share":
                        paths.append(self.workspace.share_dir(store.account, store.name) / path)
                    elif store.root_exists() and store.exists(path):
                        paths.append(Path(f"blob:{store.info(path).md5}"))
        return paths


def _job_name(run: PipelineRun, step: Step | ParallelStep) -> str:
    """The name of the job a step of ``run`` runs as (in the pipeline's experiment)."""
    return f"{run.run_id}-{step.name}"[:64]


def _stamp() -> str:
    """The current UTC time to the microsecond: a step's span in run.json is worth measuring, not only seeing."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def check_datastore_path(path: str, *, what: str) -> str:
    """A relative datastore path from outside (a trigger, the command line): no escape, no shell syntax."""
    # \w: letters and digits of any script (a video named vidéo.mp4 is fine); no shell syntax, no control characters
    if not re.fullmatch(r"\w[\w./ -]{0,1023}", path) or path.startswith("/"):
        raise PipelineError(
            f"{what}: {path!r} is not a datastore path (letters, digits, '.', '_', '-', ' ' and '/', relative)"
        )
    if any(part in ("..", ".", "") for part in path.rstrip("/").split("/")):
        raise PipelineError(f"{what}: {path!r} must not contain '.', '..' or empty segments")
    return path


def _content_digest(
    path: Path, files: Callable[[Path], Iterator[tuple[Path, str]]] = iter_local_files
) -> str:
    """What ``path`` holds, as a digest: a file's bytes, or the ``files`` of a directory (for a step's code, its
    :func:`~azbai.fsutil.code_files`: the bytecode its own imports write is not a change)."""
    if str(path).startswith("blob:"):
        return str(path)
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    elif path.is_dir():
        for file, rel in files(path):
            digest.update(rel.encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def _signature(directory: Path) -> dict[str, list[int]]:
    """Each file under ``directory`` with its size and modification time (ns): what tells a changed output."""
    signature = {}
    for file, rel in iter_local_files(directory):
        info = file.stat()
        signature[rel] = [info.st_size, info.st_mtime_ns]
    return signature


def _copy_tree(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)


def list_runs(workspace: Workspace, pipeline: str) -> list[PipelineRun]:
    """Every recorded run of a pipeline, oldest first."""
    runs = [
        PipelineRun.load(p.parent) for p in (workspace.pipelines_dir / pipeline / "runs").glob("*/run.json")
    ]
    return sorted(runs, key=lambda r: r.started)
