"""Plan → the CLI v2 YAML of one job (``az ml job create -f``) as plain dicts, and what every v2 file shares.

:mod:`.pipeline` renders pipelines, :mod:`.assets` datastores and computes; :mod:`.files` writes them all.

Mapping (plan → Azure ML SDK v2 / CLI v2):

=================================  ==================================================================================
plan                               CLI v2 YAML
=================================  ==================================================================================
Datastore (blob container)         ``datastores/<name>.yml``, ``type: azure_blob``, no ``credentials`` (given at
                                   submit time); the workspace default store is not written (it exists)
Datastore (file share)             ``type: azure_file``, likewise
DataReference mount                ``uri_folder`` input, ``mode: ro_mount``; an ``rw_mount`` output when the job
                                   can write into the volume (:func:`volume_writes`: a command line, the job
                                   preparation, a variable, stdOutErrPathPrefix or an output directory names it)
DataReference download             ``uri_folder`` input, ``mode: download``
DataReference upload               ``uri_folder`` output, ``mode: upload``, at ``<prefix>/<segment>/outputs[/<sfx>]``
Compute                            ``computes/<name>.yml``, ``type: amlcompute``
Container                          inline ``environment``: ``image`` + ``conda_file`` with the pip packages on an
                                   Azure ML base image; the user's own image alone (``Container.own_image``)
Launch distribution mpi            ``distribution: {type: mpi, process_count_per_instance}``
Launch distribution pytorch        ``distribution: {type: pytorch, process_count_per_instance}``
Launch distribution tensorflow     ``distribution: {type: tensorflow, parameter_server_count, worker_count}``
Job (one step)                     ``job.yml``: ``type: command`` running the compatibility launcher
Step / ParallelStep                ``components/<step>.yml``: a ``command`` / ``parallel`` component
Pipeline data                      a ``uri_folder`` output bound to ``${{parent.jobs.<producer>.outputs.<name>}}``
Parameter (string / data path)     a pipeline input: a literal / a ``uri_file`` or ``uri_folder`` input (download)
Trigger                            ``schedule.yml``: a recurrence at the polling interval (v2 has no datastore trigger)
max_wall_clock_seconds             ``limits.timeout``
secrets                            none in any file: ``submit.py`` puts them in the workspace Key Vault, the job runs
                                   with ``identity: managed`` and the launcher reads them there
=================================  ==================================================================================

Batch AI's output segment ``{subscription}/{resource_group}/workspaces/{workspace}/…/{job_uuid}`` is written with the
job uuid as Azure ML's ``${{name}}`` in datastore paths (``{run-id}`` for the launcher, which reads
``$AZUREML_RUN_ID``); ``{subscription}``, ``{resource_group}`` and ``{workspace}`` stay as they are in the files and
are filled by ``submit.py`` from the workspace (the launcher fills them from ``$AZUREML_ARM_*``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from azbai.errors import TargetError
from azbai.plan.model import (
    SEGMENT_TEMPLATE,
    Container,
    DataMode,
    DataReference,
    Distribution,
    Job,
    Plan,
    Step,
)
from azbai.targets.azureml_v2.yaml_text import Comment, Folded
from azbai.targets.snapshot import JOB_FILE, LAUNCHER_FILE

SCHEMA = "https://azuremlschemas.azureedge.net/latest/{}.schema.json"
#: what Azure ML substitutes for the job's own name (the Batch AI job uuid of the segment)
JOB_NAME_EXPRESSION = "${{name}}"
#: tokens of the segment filled when the job is submitted (submit.py) or run (the launcher)
WORKSPACE_TOKENS = ("{subscription}", "{resource_group}", "{workspace}")
#: the variable through which the launcher finds the workspace Key Vault (set by submit.py)
VAULT_VARIABLE = "AZBAI_KEY_VAULT_URL"
#: pip packages the launcher needs to read job secrets from Key Vault with the job's identity
VAULT_PACKAGES = ("azure-keyvault-secrets", "azure-identity")


def ident(name: str) -> str:
    """A name Azure ML accepts for an input, output, node or component: lower case, digits, underscores."""
    text = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "x"
    return text if text[0].isalpha() else f"x_{text}"


def datastore_uri(store: str, path: str) -> str:
    """``azureml://datastores/<store>/paths/<path>``."""
    return f"azureml://datastores/{store}/paths/{path.strip('/')}"


def segment(plan: Plan, job: Job, job_uuid: str) -> str:
    """Batch AI's output segment of ``job``, the workspace tokens left in, the uuid as given."""
    template = job.segment_template or SEGMENT_TEMPLATE
    return template.format(
        subscription="{subscription}",
        resource_group="{resource_group}",
        workspace="{workspace}",
        experiment=plan.experiment,
        job=plan.name,
        job_uuid=job_uuid,
    )


def launcher_segment(plan: Plan, job: Job) -> str:
    """The segment the launcher gets: ``{run-id}`` is Azure ML's run id (the job's name in v2)."""
    return segment(plan, job, "{run-id}")


def has_secrets(plan: Plan) -> bool:
    """Whether any step reads job secrets (then jobs run with a managed identity that reads Key Vault)."""
    return any(step.job.secrets for step in plan.job_steps)


@dataclass
class Binding:
    """One data reference of a job step as v2 input or output: its YAML and the launcher's ``--data`` pair."""

    name: str
    reference: str
    direction: str  # "inputs" or "outputs"
    spec: dict[str, Any]
    #: a datastore path with the segment in it: submit.py fills the workspace tokens
    segment_path: bool = False


@dataclass
class StepIO:
    """What a job step reads and writes, as v2 sees it."""

    bindings: list[Binding] = field(default_factory=list)
    #: string parameters the launcher gets with ``--param``
    params: list[str] = field(default_factory=list)


def check_unique(io: StepIO, step: str) -> StepIO:
    """Two plan names that become the same v2 name would overwrite each other: an error that says which."""
    seen: dict[str, str] = {}
    pairs = [(b.reference, b.name) for b in io.bindings] + [(p, ident(p)) for p in io.params]
    for original, key in pairs:
        if seen.setdefault(key, original) != original:
            raise TargetError(
                f"step {step!r}: {seen[key]!r} and {original!r} both become the Azure ML v2 name {key!r}; rename one"
            )
    return io


def volume_writes(job: Job) -> dict[str, str]:
    """The volumes the job can write into, by name, each with where the job names it.

    Batch AI mounted every volume read-write (and v1's ``as_mount()`` is read-write too). v2 mounts an input
    read-only, so a volume the job names by its mount path (``$AZ_BATCHAI_JOB_MOUNT_ROOT/<path>``, ``${…}`` too) in a
    command line, its job preparation, an environment variable, its stdout/stderr prefix or an output directory kept
    on the volume is an ``rw_mount`` output instead, which shows what the volume already holds. A mount root named
    alone (``cd $AZ_BATCHAI_JOB_MOUNT_ROOT``) can reach every volume under it. A volume reached only through an input
    directory (``$AZ_BATCHAI_INPUT_<id>``) stays a read-only input.
    """
    places = [("its stdout/stderr prefix", job.std_out_err_path_prefix)]
    places += [
        (f"the output directory {d.id}", d.path_prefix)
        for d in job.output_directories
        if not d.data_reference
    ]
    places += [("its command line", g.command) for g in job.launch.groups]
    places += [("its job preparation", job.job_preparation or "")]
    places += [(f"the variable {v.name}", v.value) for v in job.environment_variables]
    writes: dict[str, str] = {}
    for volume in job.volumes:
        root = re.escape(volume.root.value)
        relative = re.escape(volume.relative_mount_path.strip("/"))
        # $ROOT/<path> (or ${ROOT}/<path>) whole, or the root alone
        named = re.compile(
            rf"\$(?:{root}|\{{{root}\}})/{relative}(?![\w.-])|\$(?:{root}(?!\w)|\{{{root}\}})(?!/[\w.-])"
        )
        first = next((where for where, text in places if named.search(text)), None)
        if first is not None:
            writes[volume.name] = first
    return writes


def written_volumes(job: Job) -> set[str]:
    """Names of the volumes the job can write into (:func:`volume_writes`): each an ``rw_mount`` output."""
    return set(volume_writes(job))


def written_reference_notes(job: Job, bindings: list[Binding]) -> dict[str, str]:
    """Output name → why the volume behind it is an ``rw_mount`` output, for a comment above it."""
    writes = volume_writes(job)
    volume_of = {v.data_reference: v for v in job.volumes if v.data_reference}
    notes = {}
    for binding in bindings:
        volume = volume_of.get(binding.reference)
        if volume is not None and volume.name in writes and binding.spec.get("mode") == "rw_mount":
            notes[binding.name] = (
                f"{binding.name}: read-write on Batch AI, and {writes[volume.name]} names it: rw_mount "
                "(shows what the volume holds)"
            )
    return notes


def reference_binding(plan: Plan, job: Job, ref: DataReference, writable: bool) -> Binding:
    """A plan data reference as a v2 input (ro_mount, download) or output (rw_mount, upload)."""
    path = ref.path_on_datastore
    in_segment = "{segment}" in path
    if in_segment:
        path = path.replace("{segment}", segment(plan, job, JOB_NAME_EXPRESSION))
    uri = datastore_uri(ref.datastore, path)
    if ref.mode is DataMode.UPLOAD:
        return Binding(ident(ref.name), ref.name, "outputs", _data("uri_folder", uri, "upload"), in_segment)
    if ref.mode is DataMode.MOUNT and writable:
        return Binding(ident(ref.name), ref.name, "outputs", _data("uri_folder", uri, "rw_mount"), in_segment)
    mode = "ro_mount" if ref.mode is DataMode.MOUNT else "download"
    return Binding(ident(ref.name), ref.name, "inputs", _data("uri_folder", uri, mode), in_segment)


def _data(kind: str, path: str | None, mode: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind}
    if path is not None:
        spec["path"] = path
    if mode is not None:
        spec["mode"] = mode
    return spec


def parameter_type(default: str) -> str:
    """A data-path parameter is a file when its default names one (``incoming/clip.mp4``), else a folder."""
    last = default.rstrip("/").rsplit("/", 1)[-1]
    return "uri_file" if "." in last.strip(".") and not default.endswith("/") else "uri_folder"


def launcher_command(plan: Plan, job: Job, io: StepIO) -> Folded:
    """The command line that runs the launcher, with each input's and output's path from Azure ML."""
    lines = [
        f"python {LAUNCHER_FILE} --job {JOB_FILE}",
        f"--segment {shlex.quote(launcher_segment(plan, job))}",
    ]
    if job.launch.distribution is not Distribution.NONE:
        lines.append("--ranks external --echo")  # Azure ML starts one launcher per process
    else:
        lines.append("--echo")
    for binding in io.bindings:
        lines.append(f"--data {shlex.quote(binding.reference)} ${{{{{binding.direction}.{binding.name}}}}}")
    for name in io.params:
        lines.append(f"--param {shlex.quote(name)} ${{{{inputs.{ident(name)}}}}}")
    return Folded(lines)


def environment(container: Container, extra: tuple[str, ...] = (), secrets: bool = False) -> dict[str, Any]:
    """An inline environment: the docker image, and on an Azure ML base image a conda file with the pip packages."""
    pip = ["azureml-defaults", *container.pip_packages, *extra]
    if secrets:
        pip += [p for p in VAULT_PACKAGES if p not in pip]
    pip = list(dict.fromkeys(pip))
    if container.own_image:
        needed = [p for p in pip if p != "azureml-defaults"]
        notes = [
            "the job's own image, used as it is (no conda file in front of its Python): it must have python3"
        ]
        if needed:
            notes.append(f"and these pip packages, which azbai does not install on it: {' '.join(needed)}")
        return {**{Comment(note): None for note in notes}, "image": container.image}
    return {
        "image": container.image,
        "conda_file": {
            "name": "azbai",
            "channels": ["conda-forge"],
            "dependencies": ["python=3.10", "pip", {"pip": pip}],
        },
    }


def distribution(job: Job) -> dict[str, Any] | None:
    """The v2 ``distribution`` of the job's launch (None: one process per node, no distribution)."""
    launch = job.launch
    per_node = -(-launch.process_count // max(1, launch.node_count))
    if launch.distribution is Distribution.MPI:
        return {"type": "mpi", "process_count_per_instance": per_node}
    if launch.distribution is Distribution.PYTORCH:
        return {"type": "pytorch", "process_count_per_instance": per_node}
    if launch.distribution is Distribution.TENSORFLOW:
        counts = {g.role: g.count for g in launch.groups}
        return {
            "type": "tensorflow",
            "parameter_server_count": counts.get("ps", 1),
            "worker_count": counts.get("worker", 1),
        }
    return None


def resources(job: Job, container: Container) -> dict[str, Any]:
    """Node count and shared memory."""
    spec: dict[str, Any] = {"instance_count": max(1, job.node_count)}
    if container.shm_size:
        spec["shm_size"] = container.shm_size
    return spec


def user_variables(job: Job) -> dict[str, str]:
    """The job's plain environment variables (the launcher sets them too; a ``{parameters.X}`` value only there)."""
    return {v.name: v.value for v in job.environment_variables if "{parameters." not in v.value}


# --- the single job -------------------------------------------------------------------------------------------


def step_io(plan: Plan, step: Step) -> StepIO:
    """The bindings of a job step's data references (pipeline data and parameters are the pipeline's business)."""
    job = step.job
    writable = written_volumes(job)
    by_reference = {v.data_reference: v.name for v in job.volumes if v.data_reference}
    names = {r.name for r in plan.data_references}
    io = StepIO()
    for name in step.data_references:
        if name in names:
            ref = plan.data_reference(name)
            io.bindings.append(reference_binding(plan, job, ref, by_reference.get(name) in writable))
    return check_unique(io, step.name)


def job_document(plan: Plan) -> dict[str, Any]:
    """``v2/job.yml``: the Batch AI job as one command job."""
    step = plan.job_steps[0]
    job = step.job
    container = step.container or plan.container
    io = step_io(plan, step)
    doc: dict[str, Any] = {
        "$schema": SCHEMA.format("commandJob"),
        "type": "command",
        "display_name": plan.name,
        "experiment_name": plan.experiment,
        "description": f"The Batch AI job {plan.name} ({plan.source.file}), through the azbai compatibility launcher",
        "code": "../snapshot",
        "command": launcher_command(plan, job, io),
        "environment": environment(container, secrets=bool(job.secrets)),
        "compute": f"azureml:{step.compute or plan.compute.name}",
        "resources": resources(job, container),
    }
    dist = distribution(job)
    if dist:
        doc["distribution"] = dist
    variables = user_variables(job)
    if variables:
        doc["environment_variables"] = variables
    inputs = {b.name: b.spec for b in io.bindings if b.direction == "inputs"}
    outputs = {b.name: b.spec for b in io.bindings if b.direction == "outputs"}
    if inputs:
        doc["inputs"] = inputs
    if outputs:
        notes = written_reference_notes(job, io.bindings)
        doc["outputs"] = {
            key: value
            for name, spec in outputs.items()
            for key, value in ([(Comment(notes[name]), None)] if name in notes else []) + [(name, spec)]
        }
    if job.max_wall_clock_seconds:
        doc["limits"] = {"timeout": job.max_wall_clock_seconds}
    if job.secrets:
        doc[Comment("job secrets: read from the workspace Key Vault by the launcher, with this identity")] = (
            None
        )
        doc["identity"] = {"type": "managed"}
    return doc


def job_segment_keys(plan: Plan) -> dict[str, str]:
    """``params_override`` keys of job.yml whose value holds the segment, with that value."""
    io = step_io(plan, plan.job_steps[0])
    return {f"{b.direction}.{b.name}.path": b.spec["path"] for b in io.bindings if b.segment_path}
