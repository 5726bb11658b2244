"""The façade: files become a Plan here, once, and every other layer takes the Plan.

``load`` reads a Batch AI job.json (with its cluster.json, merged fragments and extra mounts) or an azbai pipeline
file (with the job files its steps name) into a :class:`~azbai.plan.model.Plan`; ``validate`` reports every problem
of the same files by JSON path; ``migrate`` writes what a user needs to run the plan on Azure ML.

This module imports neither azureml nor azure.ai.ml nor azure.storage: reading and writing code need no SDK.
"""

from __future__ import annotations

import dataclasses
import json
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from azbai.convert import DEFAULT_EXPERIMENT, ExtraMount, PlanOptions, build_pipeline_plan, build_plan
from azbai.errors import AzbaiError, SpecError
from azbai.plan.model import DataMode, Plan
from azbai.source.diagnostics import Diagnostic, Severity, hide_sas_signatures
from azbai.source.pipeline_spec import is_pipeline_file, load_pipeline_spec
from azbai.source.placeholders import StorageAccount
from azbai.source.reader import LoadedJob, load_cluster, load_job

if TYPE_CHECKING:
    from typing_extensions import Unpack

_T = TypeVar("_T")

#: the inline secret values of the job files plans were read from, kept in this process's memory only (never in a
#: plan, never written). Keyed by the identity of the plan's ``steps`` tuple, which the plan's copies with other
#: parameter values share, and checked against weak references to its steps: equal plans of other files (dev/ and
#: prod/ with the same folder name) never share their values, and an entry goes with the plan's first step.
_SECRETS: dict[int, tuple[tuple[weakref.ref[Any], ...], dict[str, str]]] = {}


def _remember(plan: Plan, secrets: dict[str, str]) -> None:
    if not plan.steps:
        return
    key = id(plan.steps)
    entry = (tuple(weakref.ref(step) for step in plan.steps), secrets)
    _SECRETS[key] = entry
    weakref.finalize(plan.steps[0], _forget, key, entry)


def _forget(key: int, entry: object) -> None:
    if _SECRETS.get(key) is entry:  # not a later plan's, whose steps tuple took the id
        del _SECRETS[key]


@dataclass(frozen=True)
class SourceOptions:
    """How to read a Batch AI job: the flags ``az batchai job create`` took, and the choices of a migration.

    One object instead of the same keywords in every signature; ``azbai.load`` and the CLI build it.
    """

    cluster: str | Path | None = None
    merge: tuple[str | Path, ...] = ()
    mounts: tuple[str, ...] = ()
    storage_account: str | None = None
    storage_key: str | None = field(default=None, repr=False)
    name: str | None = None
    experiment: str | None = None
    vm_size: str | None = None
    max_nodes: int | None = None
    image: str | None = None
    keep_image: bool = False
    inputs: str = "mount"
    outputs: str = "upload"

    def storage(self) -> StorageAccount:
        """The storage account the Batch AI CLI would have used: the flags (a key alone is ignored, as the CLI
        ignored it), else ``$AZURE_BATCHAI_STORAGE_ACCOUNT``/``_KEY``, else the az configuration file's
        ``[batchai]`` section."""
        return StorageAccount.resolve(self.storage_account, self.storage_key)

    def plan_options(self) -> PlanOptions:
        """The choices that shape the plan of a single job."""
        try:
            input_mode, output_mode = DataMode(self.inputs), DataMode(self.outputs)
        except ValueError as exc:
            raise AzbaiError(f"{exc}: use mount, download (inputs) or mount, upload (outputs)") from None
        return PlanOptions(
            name=self.name,
            experiment=self.experiment or DEFAULT_EXPERIMENT,
            vm_size=self.vm_size,
            image=self.image,
            keep_image=self.keep_image,
            input_mode=input_mode,
            output_mode=output_mode,
            mounts=tuple(ExtraMount.parse(m) for m in self.mounts),
            max_nodes=self.max_nodes,
        )

    def job_only(self) -> list[str]:
        """The options set here that a pipeline file cannot take (each step's job says them)."""
        defaults = SourceOptions()
        reading = ("cluster", "merge", "mounts", "name", "vm_size", "max_nodes")
        names = (*reading, "image", "keep_image", "inputs", "outputs")
        return [n for n in names if getattr(self, n) != getattr(defaults, n)]


@dataclass(frozen=True)
class Loaded:
    """A plan, every diagnostic of the files it came from (each labelled with its file), and where they are."""

    plan: Plan
    diagnostics: tuple[Diagnostic, ...]
    #: the directory relative paths of the plan (a parallel step's source directory) start from
    base_dir: Path


@dataclass(frozen=True)
class ValidationReport:
    """Every problem of a job (with its cluster) or a pipeline file (with its step jobs), errors included."""

    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        """True when nothing stops the migration (warnings may remain)."""
        return not self.errors

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        """The problems that stop the migration."""
        return tuple(d for d in self.diagnostics if d.is_error)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        """The problems reported while the migration goes on."""
        return tuple(d for d in self.diagnostics if not d.is_error)


#: the plan notes that are problems of the file itself, so that ``validate`` reports them too
FILE_NOTE_CODES = frozenset(
    {
        "undescribed-mount",
        "nfs-unsupported",
        "unmanaged-mount-unsupported",
        "path-absolute",
        "local-size-limit",
        "parameter-in-command",
    }
)


class _Reader:
    """Reads the files of one source; collects diagnostics (``validate``) or raises on the first bad file."""

    def __init__(self, options: SourceOptions, *, collect: bool) -> None:
        self.options = options
        self.storage = options.storage()
        self.collect = collect
        self.diagnostics: list[Diagnostic] = []
        self.secrets: dict[str, str] = {}

    def _attempt(self, load: Callable[[], _T]) -> _T | None:
        """``load()``, or None when it raised :class:`SpecError` and diagnostics are being collected."""
        try:
            return load()
        except SpecError as exc:
            if not self.collect:
                raise
            self._add(exc.diagnostics, exc.source)
            return None

    def _add(self, diagnostics: Iterable[Diagnostic], source: str | Path) -> None:
        self.diagnostics += [d if d.file else dataclasses.replace(d, file=str(source)) for d in diagnostics]

    def job(self, path: Path) -> LoadedJob | None:
        job = self._attempt(lambda: load_job(path, storage=self.storage, merge=self.options.merge))
        if job is not None:
            self._add(job.diagnostics, job.source)
            self.secrets.update(
                {s.name: s.value.reveal() for s in job.properties.secrets if s.value is not None}
            )
        return job

    def read(self, path: Path) -> Plan | None:
        if is_pipeline_file(path):
            unsupported = self.options.job_only()
            if unsupported:
                raise AzbaiError(
                    f"{', '.join(unsupported)}: not for pipeline files (set them in each step's job)"
                )
            return self._pipeline(path)
        job = self.job(path)
        cluster_file = self.options.cluster
        cluster = None
        if cluster_file:
            cluster = self._attempt(lambda: load_cluster(cluster_file, storage=self.storage))
            if cluster is None:
                return None
            self._add(cluster.diagnostics, cluster_file)
        if job is None:
            return None
        plan = build_plan(job, cluster, self.options.plan_options())
        self._file_notes(plan, str(path))
        return plan

    def _pipeline(self, path: Path) -> Plan | None:
        pipeline = self._attempt(lambda: load_pipeline_spec(path))
        if pipeline is None:
            return None
        self._add(pipeline.diagnostics, pipeline.source)
        found = {s.name: self.job(pipeline.source.parent / s.job) for s in pipeline.spec.steps if s.job}
        jobs = {name: job for name, job in found.items() if job is not None}
        if len(jobs) < len(found):
            return None
        plan = self._attempt(
            lambda: build_pipeline_plan(
                pipeline, jobs, storage=self.storage, experiment=self.options.experiment
            )
        )
        if plan is not None:
            self._file_notes(plan, str(path))
        return plan

    def _file_notes(self, plan: Plan, source: str) -> None:
        for note in plan.notes:
            if note.code in FILE_NOTE_CODES:
                message = hide_sas_signatures(note.message)  # a path holding a SAS token (sas-token says so)
                self.diagnostics.append(
                    Diagnostic(note.field, note.code, message, Severity.WARNING, file=source)
                )


def read(path: str | Path, options: SourceOptions | None = None) -> Loaded:
    """Read a job.json (and its cluster) or a pipeline file (and its step jobs) into a plan.

    :class:`SpecError` when a file has errors. The plan's inline secret values are kept in memory for a local run.
    """
    path = Path(path)
    reader = _Reader(options or SourceOptions(), collect=False)
    plan = reader.read(path)
    assert plan is not None  # without collect, every failure raised
    if reader.secrets:
        _remember(plan, reader.secrets)
    return Loaded(plan, tuple(reader.diagnostics), path.resolve().parent)


def check(path: str | Path, options: SourceOptions | None = None) -> ValidationReport:
    """Every problem of the files, errors included, without raising for them (``azbai validate``)."""
    reader = _Reader(options or SourceOptions(), collect=True)
    reader.read(Path(path))
    return ValidationReport(tuple(reader.diagnostics))


def secret_values(plan: Plan) -> Mapping[str, str]:
    """The inline secret values of the job files ``plan`` was read from (empty when none or not read here)."""
    entry = _SECRETS.get(id(plan.steps))
    if entry is None or len(entry[0]) != len(plan.steps):
        return {}
    refs, secrets = entry
    return secrets if all(ref() is step for ref, step in zip(refs, plan.steps, strict=True)) else {}


class LoadOptions(TypedDict, total=False):
    """The keyword arguments of :func:`load`, :func:`validate` and :func:`migrate` (see :class:`SourceOptions`)."""

    cluster: str | Path | None
    merge: Sequence[str | Path]
    mounts: Sequence[str]
    storage_account: str | None
    storage_key: str | None
    name: str | None
    experiment: str | None
    vm_size: str | None
    max_nodes: int | None
    image: str | None
    keep_image: bool
    inputs: str
    outputs: str


def options_dict(options: SourceOptions) -> LoadOptions:
    """The keyword arguments of :func:`load` that give ``options`` (those not at their default)."""
    defaults = SourceOptions()
    names = [f.name for f in dataclasses.fields(SourceOptions)]
    return {n: getattr(options, n) for n in names if getattr(options, n) != getattr(defaults, n)}  # type: ignore[return-value]


def options_from(options: LoadOptions) -> SourceOptions:
    """A :class:`SourceOptions` from :func:`load`'s keyword arguments."""
    values: dict[str, Any] = dict(options)
    for key in ("merge", "mounts"):
        if key in values:
            values[key] = tuple(values[key])
    try:
        return SourceOptions(**values)
    except TypeError as exc:
        raise AzbaiError(str(exc).replace("SourceOptions.__init__()", "azbai.load()")) from None


def load(path: str | Path, **options: Unpack[LoadOptions]) -> Plan:
    """Read a Batch AI job.json or an azbai pipeline file into a :class:`Plan`.

    Keywords, named for the ``az batchai job create`` flags they stand for: ``cluster`` (a cluster.json), ``merge``
    (fragments deep-merged into the job), ``mounts`` (``NAME=afs://ACCOUNT/SHARE`` or ``NAME=blob://ACCOUNT/
    CONTAINER``), ``storage_account``/``storage_key`` (replace ``<AZURE_BATCHAI_STORAGE_ACCOUNT>``/``_KEY``; else
    ``$AZURE_BATCHAI_STORAGE_ACCOUNT``/``_KEY``, else the az configuration file's ``[batchai]`` section, in the
    Batch AI CLI's order); and the migration's choices ``name``, ``experiment``,
    ``vm_size``, ``max_nodes``, ``image``, ``keep_image``, ``inputs`` (mount|download), ``outputs``
    (upload|mount). A pipeline file takes only the storage account and the experiment.

    Raises :class:`~azbai.errors.SpecError` with every diagnostic when a file has errors.
    """
    return read(path, options_from(options)).plan


def validate(path: str | Path, **options: Unpack[LoadOptions]) -> ValidationReport:
    """Every problem of a job.json (with its cluster) or a pipeline file (with its step jobs), by JSON path."""
    return check(path, options_from(options))


@dataclass(frozen=True)
class MigrationResult:
    """What :func:`migrate` wrote."""

    plan: Plan
    output_dir: Path
    files: tuple[Path, ...]
    diagnostics: tuple[Diagnostic, ...]


#: the migration targets: ``v1`` (Azure ML SDK v1 code), ``v2`` (CLI v2 YAML and azure-ai-ml code); ``all``: both
TARGETS = ("v1", "v2")


def migrate(
    source: str | Path | Plan,
    output_dir: str | Path | None = None,
    *,
    target: str = "all",
    base_dir: str | Path | None = None,
    **options: Unpack[LoadOptions],
) -> MigrationResult:
    """Write what a user needs to run a job or pipeline on Azure ML (default folder: ``migrated/<name>``).

    ``source`` is a job.json, a pipeline file or a :class:`Plan` (then ``base_dir`` is where a parallel step's
    source directory is; default: the current directory). Everything is rendered in memory first and written
    only when nothing failed. Neither azureml nor azure.ai.ml is imported.
    """
    from azbai.fsutil import write_tree

    _targets(target)
    if isinstance(source, Plan):
        if options:
            raise AzbaiError(f"{', '.join(options)}: options of reading a file, not of migrating a plan")
        plan, folder = source, Path(base_dir) if base_dir else Path.cwd()
        diagnostics: tuple[Diagnostic, ...] = ()
    else:
        loaded = read(source, options_from(options))
        plan, diagnostics, folder = loaded.plan, loaded.diagnostics, loaded.base_dir
    files = render_files(plan, folder, target)
    directory = Path(output_dir) if output_dir else Path("migrated") / plan.name
    try:
        written = write_tree(directory, files)
    except OSError as exc:
        raise AzbaiError(_file_problem(exc, plan, f"cannot write {directory}")) from exc
    return MigrationResult(plan, directory, written, diagnostics)


def _targets(target: str) -> tuple[str, ...]:
    if target == "all":
        return TARGETS
    if target not in TARGETS:
        raise AzbaiError(f"unknown target {target!r}: choose {', '.join((*TARGETS, 'all'))}")
    return (target,)


def render_files(plan: Plan, base_dir: Path | None = None, target: str = "all") -> dict[str, str | bytes]:
    """Every file of a migration to ``target`` (v1, v2 or all), by its path in the output folder, in memory.

    ``plan.json`` and ``MIGRATION.md`` (which has both targets' columns) are always among them.
    """
    targets = _targets(target)
    from azbai.plan.serialize import plan_to_json
    from azbai.targets.report import render_report

    files: dict[str, str | bytes] = {"plan.json": plan_to_json(plan), "MIGRATION.md": render_report(plan)}
    try:
        if "v1" in targets:
            from azbai.targets.azureml_v1.files import render_files as render_v1

            files.update(render_v1(plan, base_dir))
        if "v2" in targets:
            from azbai.targets.azureml_v2 import render_files as render_v2

            files.update(render_v2(plan, base_dir))
    except OSError as exc:
        # a parallel step's source directory is read, and a name may be too long for a file
        raise AzbaiError(_file_problem(exc, plan, "cannot render the migration")) from exc
    return files


def _file_problem(exc: OSError, plan: Plan, doing: str) -> str:
    """An OS error of reading or writing the files of a migration, naming the file (shortened) and the fields of
    the plan whose values are in its path (a too long sourceDirectory or step name)."""
    name = str(exc.filename) if exc.filename is not None else ""
    shown = name if len(name) <= 120 else name[:60] + "..." + name[-40:]
    parts = set(Path(name).parts)
    fields = []
    for step in plan.steps:
        label = step.name if len(step.name) <= 40 else step.name[:37] + "..."
        source = getattr(step, "source_directory", None)
        if source and source.strip("/") and source.strip("/") in name:
            fields.append(f"the sourceDirectory of step '{label}'")
        if step.name in parts:
            fields.append(f"the name of step '{label}'")
    if plan.name in parts:
        fields.append("the job's name")
    where = f" (from {', '.join(fields)})" if fields else ""
    return f"{doing}: {shown or 'a file'}: {exc.strerror or exc}{where}"


def azureml_objects(
    plan: Plan,
    target: str = "v1",
    *,
    account_name: str | None = None,
    base_dir: str | Path | None = None,
    directory: str | Path | None = None,
) -> dict[str, Any]:
    """The plan's Azure ML objects, built offline by the very code ``azbai migrate`` writes (nothing contacts Azure).

    ``v1``: the azureml objects of ``pipeline.py`` (``datastores``, ``references``, ``compute``, ``environment``,
    ``pipeline`` …); ``v2``: the azure-ai-ml entities of ``v2/`` (``job``, ``datastores``, ``computes``,
    ``schedule``). Either way ``summary`` is what ``--dry-run`` prints. ``account_name`` replaces the CLI's
    account placeholder; ``directory`` keeps the generated files (default: a temporary folder).
    """
    if target == "v1":
        from azbai.targets.azureml_v1 import build_objects, offline

        try:
            objects = build_objects(plan, account_name=account_name, directory=directory, base_dir=base_dir)
        except OSError as exc:
            raise AzbaiError(_file_problem(exc, plan, "cannot build the Azure ML objects")) from exc
        objects["summary"] = offline.summary_text(offline.summarize(objects))
        return objects
    if target == "v2":
        from azbai.targets.azureml_v2 import plan_entities

        try:
            entities = plan_entities(plan, directory=directory, base_dir=base_dir, account_name=account_name)
        except OSError as exc:
            raise AzbaiError(_file_problem(exc, plan, "cannot build the Azure ML objects")) from exc
        summary = entities["module"].summarize(entities)
        entities["summary"] = "\n".join(f"{key}: {json.dumps(value)}" for key, value in summary.items())
        return entities
    raise AzbaiError(f"unknown target {target!r}: choose v1 or v2")
