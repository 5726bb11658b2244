"""Source model → plan: the one place that decides what each Batch AI field becomes."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from azbai.convert.compute import CURRENT_BASE_IMAGE, RECIPE_VM_SIZE, replacement_for, vm_size
from azbai.convert.paths import absolute_path_note, expand_job_variables
from azbai.convert.storage import ExtraMount, StorageLayout
from azbai.convert.toolkits import launch_for
from azbai.errors import PlanError
from azbai.plan.model import (
    LOCAL_MAX_NODES,
    LOCAL_MAX_PROCESSES,
    SEGMENT_TOKEN,
    Compute,
    Container,
    DataMode,
    DataReference,
    Distribution,
    EnvironmentVariable,
    InputDirectory,
    Job,
    LaunchMode,
    MappingRow,
    MountRoot,
    Note,
    OutputDirectory,
    Plan,
    SecretReference,
    Severity,
    Source,
    Step,
    VariableMapping,
    VariableSource,
    escape_braces,
)
from azbai.source.checks import shell_fields
from azbai.source.model import TensorFlowSettings
from azbai.source.reader import LoadedCluster, LoadedJob
from azbai.source.variables import BATCHAI_VARIABLES, input_variable, output_variable

DEFAULT_EXPERIMENT = "batchai-migration"
#: Batch AI's rule for a job name (a path segment of its outputs, and its step's name here), without names of
#: dots alone
_JOB_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
#: Azure ML's rule for an experiment name (azureml-core's check_valid_resource_name)
_EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
DEFAULT_COMPUTE = "gpu-cluster"


@dataclass(frozen=True)
class PlanOptions:
    """Choices a user makes on the command line (``azbai migrate``)."""

    name: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    vm_size: str | None = None
    image: str | None = None
    keep_image: bool = False
    input_mode: DataMode = DataMode.MOUNT
    output_mode: DataMode = DataMode.UPLOAD
    mounts: tuple[ExtraMount, ...] = ()
    compute_name: str = DEFAULT_COMPUTE
    max_nodes: int | None = None


def build_plan(
    job: LoadedJob, cluster: LoadedCluster | None = None, options: PlanOptions | None = None
) -> Plan:
    """Translate a loaded job (and optionally its cluster) into a plan."""
    options = options or PlanOptions()
    if options.input_mode not in (DataMode.MOUNT, DataMode.DOWNLOAD):
        raise PlanError("input directories can be mounted or downloaded, not uploaded")
    if options.output_mode not in (DataMode.MOUNT, DataMode.UPLOAD):
        raise PlanError("output directories can be mounted or uploaded, not downloaded")
    if options.name is not None and not _JOB_NAME.fullmatch(options.name):
        raise PlanError(
            f"the job name {options.name!r} cannot name a job: 1 to 64 letters, digits, '-', '_' or '.', starting "
            "with a letter, a digit or '_'"
        )
    if not _EXPERIMENT_NAME.fullmatch(options.experiment):
        raise PlanError(
            f"the experiment {options.experiment!r} cannot be an Azure ML experiment: 1 to 255 letters, digits, "
            "'-' or '_', starting with a letter or a digit"
        )
    props = job.properties
    name = options.name or default_name(job.source)
    rows: list[MappingRow] = []
    layout = StorageLayout()

    if props.mount_volumes is not None:
        layout.add_volumes(props.mount_volumes, MountRoot.JOB, job.path_of)
    if cluster is not None and cluster.properties.node_setup is not None:
        node_setup = cluster.properties.node_setup
        if node_setup.mount_volumes is not None:
            layout.add_volumes(node_setup.mount_volumes, MountRoot.CLUSTER, cluster.walker.path_of)
    for mount in options.mounts:
        layout.add_extra_mount(mount)
    job_variables = {v.name: v.value or "" for v in props.environment_variables}
    texts = list(shell_fields(props, job.walker))
    if props.std_out_err_path_prefix is not None:
        texts.append((_field(job, "stdOutErrPathPrefix"), props.std_out_err_path_prefix))
    layout.add_undescribed([(field, expand_job_variables(text, job_variables)) for field, text in texts])
    for volume in layout.volumes:
        became = (
            f"datastore '{layout.volume_targets[volume.name][0]}', DataReference '{volume.data_reference}' "
            f"as_mount(), at ${volume.root.value}/{volume.relative_mount_path}"
            if volume.data_reference
            else f"an empty local directory at ${volume.root.value}/{volume.relative_mount_path} (see warnings)"
        )
        rows.append(MappingRow(volume.source_path, volume.kind.value, became))

    inputs = tuple(
        _input(d, expand_job_variables(d.path, job_variables), job, layout, options, rows)
        for d in props.input_directories
    )
    outputs = tuple(
        _output(d, expand_job_variables(d.path_prefix, job_variables), job, layout, options, rows)
        for d in props.output_directories
    )
    for d, output in zip(props.output_directories, outputs, strict=True):
        note = absolute_path_note(job.path_of(d) + ".pathPrefix", output.path_prefix)
        if note is not None:
            layout.notes.append(note)
    stdouterr = expand_job_variables(
        props.std_out_err_path_prefix or "$AZ_BATCHAI_JOB_MOUNT_ROOT", job_variables
    )
    note = absolute_path_note(_field(job, "stdOutErrPathPrefix"), stdouterr)
    if note is not None:
        layout.notes.append(note)
    if layout.datastore_path(stdouterr) is None:
        layout.notes.append(
            Note(
                _field(job, "stdOutErrPathPrefix"),
                "stdouterr-on-node",
                "the stdout/stderr directory is on no datastore, so the files stay on the node; the launcher also "
                "copies the job's output into the Azure ML run's own logs",
                Severity.INFO,
            )
        )
    rows.append(
        MappingRow(
            _field(job, "stdOutErrPathPrefix"),
            stdouterr,
            "the launcher writes Batch AI's stdout/stderr files under <prefix>/<segment>/stdouterr/ and echoes "
            "them into the Azure ML run log",
        )
    )

    env = tuple(EnvironmentVariable(v.name, v.value or "") for v in props.environment_variables)
    for v in props.environment_variables:
        rows.append(MappingRow(job.path_of(v), v.name, "an environment variable set by the launcher"))
    secrets = tuple(_secret(s, job, rows) for s in props.secrets)
    launch = launch_for(props)
    rows.append(
        MappingRow(
            _field(job, props.toolkit_key or ""),
            f"{launch.process_count} process(es) on {launch.node_count} node(s)",
            f"launch mode {launch.mode.value}, Azure ML distribution {launch.distribution.value}",
        )
    )
    prep = props.job_preparation.command_line if props.job_preparation else None
    if prep is not None:
        rows.append(
            MappingRow(
                job.path_of(props.job_preparation) + ".commandLine",
                _short(prep),
                "run by the launcher on every node before the toolkit (bash), logs stdout-job_prep-<node>-<time>.txt",
            )
        )
    max_wall = props.constraints.max_wall_clock_time if props.constraints else None
    if max_wall is not None:
        rows.append(
            MappingRow(
                job.path_of(props.constraints) + ".maxWallClockTime",
                str(max_wall),
                "enforced by the launcher (the step fails when it is exceeded)",
            )
        )
    job_section = Job(
        name=name,
        node_count=props.node_count or 1,
        std_out_err_path_prefix=stdouterr,
        volumes=tuple(layout.volumes),
        input_directories=inputs,
        output_directories=outputs,
        environment_variables=env,
        secrets=secrets,
        job_preparation=prep,
        launch=launch,
        max_wall_clock_seconds=int(max_wall.total_seconds()) if max_wall is not None else None,
    )
    notes = list(layout.notes)
    _launch_notes(job, launch.mode, launch.node_count, launch.process_count, notes)
    _unused_master_args(job, launch.distribution, notes)
    _other_field_notes(job, notes, rows)
    container = _container(job, options, notes, rows)
    compute = _compute(job, cluster, options, notes, rows)
    step = Step(name=name, job=job_section, data_references=tuple(layout.references))
    return Plan(
        name=name,
        experiment=options.experiment,
        source=Source(
            file=Path(job.source).name,
            schema_version=job.config.schema_version,
            toolkit=props.toolkit_key or "",
            cluster_file=Path(cluster.source).name if cluster else None,
        ),
        datastores=tuple(layout.datastores.values()),
        data_references=tuple(layout.references.values()),
        container=container,
        compute=compute,
        steps=(step,),
        variables=_variables(job_section),
        notes=tuple(notes),
        mapping=tuple(rows),
    )


def default_name(source: str) -> str:
    """A job name from a file name: the folder for ``…/CNTK-GPU-Python/job.json``, else the file's stem."""
    path = Path(source)
    stem = path.parent.name if path.stem == "job" and path.parent.name else path.stem
    name = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")
    return name or "job"


def _field(job: LoadedJob, key: str) -> str:
    return f"properties.{key}" if job.config.wrapped else key


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _input(
    d, text: str, job: LoadedJob, layout: StorageLayout, options: PlanOptions, rows: list[MappingRow]
) -> InputDirectory:  # type: ignore[no-untyped-def, unused-ignore]
    """``text`` is ``d.path`` with the job's variables expanded."""
    path = job.path_of(d)
    target = layout.datastore_path(text)
    if options.input_mode is DataMode.DOWNLOAD and target is not None:
        store, on_store = target
        ref = layout.add_reference(
            DataReference(f"input_{d.id.lower()}", store, on_store, DataMode.DOWNLOAD, f"azbai/inputs/{d.id}")
        )
        rows.append(MappingRow(path, text, f"DataReference '{ref}' as_download() → ${input_variable(d.id)}"))
        return InputDirectory(d.id, text, ref)
    if target is None:
        became = f"${input_variable(d.id)} = {text} (on no datastore)"
    else:
        became = f"${input_variable(d.id)} = {text}, read through the volume's mount"
    rows.append(MappingRow(path, text, became))
    return InputDirectory(d.id, text)


def _output(
    d, prefix: str, job: LoadedJob, layout: StorageLayout, options: PlanOptions, rows: list[MappingRow]
) -> OutputDirectory:  # type: ignore[no-untyped-def, unused-ignore]
    """``prefix`` is ``d.pathPrefix`` with the job's variables expanded."""
    path = job.path_of(d)
    suffix = d.path_suffix.strip("/") if d.path_suffix else None
    target = layout.datastore_path(prefix)
    if options.output_mode is DataMode.MOUNT and target is not None:
        rows.append(MappingRow(path, prefix, f"${output_variable(d.id)} written through the volume's mount"))
        return OutputDirectory(d.id, prefix, suffix)
    if target is None:
        store = layout.workspace_default()
        resolved = layout.resolve(prefix)
        base = "batchai/" + (resolved[0].relative_mount_path if resolved else "local")
        on_store = posixpath.join(base, resolved[1] if resolved and resolved[1] else "").strip("/")
        layout.notes.append(
            Note(
                path + ".pathPrefix",
                "output-on-default-datastore",
                f"the output directory {d.id} is on no datastore; its files are uploaded to the workspace's default "
                f"datastore under {on_store}/<segment>/outputs instead",
            )
        )
    else:
        store, on_store = target
    # the path is a template over {segment}: the user's own braces are doubled (azbai.plan.model.fill_segment)
    parts = [p for p in (escape_braces(on_store), SEGMENT_TOKEN, "outputs", escape_braces(suffix or "")) if p]
    ref = layout.add_reference(
        DataReference(
            f"output_{d.id.lower()}",
            store,
            "/".join(parts),
            DataMode.UPLOAD,
            f"azbai/outputs/{d.id}",
            overwrite=True,
        )
    )
    rows.append(
        MappingRow(
            path,
            prefix + (f" + {suffix}" if suffix else ""),
            f"DataReference '{ref}' as_upload() to {store}:{'/'.join(parts)} ← ${output_variable(d.id)}",
        )
    )
    return OutputDirectory(d.id, prefix, suffix, ref)


def _secret(s, job: LoadedJob, rows: list[MappingRow]) -> SecretReference:  # type: ignore[no-untyped-def, unused-ignore]
    path = job.path_of(s)
    if s.value_secret_reference is not None:
        url = s.value_secret_reference.secret_url
        rows.append(
            MappingRow(
                path,
                s.name,
                f"stays in your Key Vault ({url}): copy it into the workspace Key Vault as "
                f"'{s.name.replace('_', '-')}', where the launcher reads it with Run.get_secret",
            )
        )
        return SecretReference(s.name, "key_vault", url)
    rows.append(
        MappingRow(
            path,
            s.name,
            f"stored in the workspace Key Vault from ${s.name} at submit time; the launcher reads it with "
            "Run.get_secret (value never written)",
        )
    )
    return SecretReference(s.name, "environment")


def _launch_notes(job: LoadedJob, mode: LaunchMode, nodes: int, processes: int, notes: list[Note]) -> None:
    key = job.properties.toolkit_key or ""
    if nodes > LOCAL_MAX_NODES or processes > LOCAL_MAX_PROCESSES:
        notes.append(
            Note(
                _field(job, "nodeCount" if nodes > LOCAL_MAX_NODES else key),
                "local-size-limit",
                f"{processes} process(es) on {nodes} node(s): a local job (azbai job create) simulates at most "
                f"{LOCAL_MAX_NODES} nodes and {LOCAL_MAX_PROCESSES} processes on one machine, so it cannot run "
                "locally; Azure ML runs it on real nodes",
            )
        )
    if mode is LaunchMode.MASTER_ONLY and nodes > 1:
        notes.append(
            Note(
                _field(job, key),
                "custom-toolkit-master-only",
                f"customToolkitSettings runs once, on the master node; with nodeCount {nodes} a command that starts "
                "mpirun itself must use $AZ_BATCHAI_MPI_HOST_FILE, which the launcher writes from Azure ML's hosts",
            )
        )
    if mode in (LaunchMode.MPI, LaunchMode.PER_PROCESS) and processes % nodes:
        notes.append(
            Note(
                _field(job, key),
                "uneven-processes",
                f"{processes} processes do not divide evenly over {nodes} nodes; Azure ML starts the same number on "
                f"every node, so the step asks for {-(-processes // nodes)} per node and the launcher runs only "
                f"ranks below {processes}",
            )
        )


def _unused_master_args(job: LoadedJob, distribution: Distribution, notes: list[Note]) -> None:
    """Distributed TensorFlow runs parameter servers and workers, each with its own arguments: a
    ``masterCommandLineArgs`` that differs from the workers' reaches no process, and is said so."""
    toolkit = job.properties.toolkit
    if (
        isinstance(toolkit, TensorFlowSettings)
        and distribution is Distribution.TENSORFLOW
        and toolkit.master_command_line_args
        and toolkit.worker_command_line_args
        and toolkit.master_command_line_args != toolkit.worker_command_line_args
    ):
        notes.append(
            Note(
                _field(job, "tensorFlowSettings.masterCommandLineArgs"),
                "master-args-unused",
                f"a distributed TensorFlow job runs parameter servers and workers, and every worker (task 0 too) "
                f"gets workerCommandLineArgs; these master arguments are not passed to any process: "
                f"{_short(toolkit.master_command_line_args)}",
            )
        )


def _other_field_notes(job: LoadedJob, notes: list[Note], rows: list[MappingRow]) -> None:
    props = job.properties
    if props.scheduling_priority is not None or props.priority is not None:
        key = "schedulingPriority" if props.scheduling_priority is not None else "priority"
        value = props.scheduling_priority if props.scheduling_priority is not None else str(props.priority)
        notes.append(Note(_field(job, key), "priority-ignored", "Azure ML v1 has no job priority; ignored"))
        rows.append(MappingRow(_field(job, key), value, "nothing (Azure ML v1 has no job priority)"))
    if props.cluster is not None:
        rows.append(
            MappingRow(_field(job, "cluster"), props.cluster.id, "the AmlCompute cluster of the plan")
        )
    if props.experiment_name is not None:
        rows.append(MappingRow(_field(job, "experimentName"), props.experiment_name, "ignored; use -e"))


def _container(job: LoadedJob, options: PlanOptions, notes: list[Note], rows: list[MappingRow]) -> Container:
    settings = job.properties.container_settings
    toolkit_pip: tuple[str, ...] = ()
    if options.image:
        image, source_image = options.image, (settings.image_source_registry.image if settings else None)
    elif settings is None:
        image, source_image = CURRENT_BASE_IMAGE, None
        notes.append(
            Note(
                _field(job, "containerSettings"),
                "container-added",
                f"the job ran directly on the VM image; Azure ML runs every step in a container: {CURRENT_BASE_IMAGE}",
                Severity.INFO,
            )
        )
    else:
        original = settings.image_source_registry.image
        replacement = None if options.keep_image else replacement_for(original)
        if replacement is None:
            image, source_image = original, None
        else:
            image, source_image, toolkit_pip = CURRENT_BASE_IMAGE, original, replacement.pip_packages
            notes.append(
                Note(
                    _field(job, "containerSettings.imageSourceRegistry.image"),
                    "retired-image",
                    f"{original} is retired: {replacement.why}. The step uses {CURRENT_BASE_IMAGE} with "
                    f"pip {', '.join(replacement.pip_packages)} instead (--image to choose, --keep-image to keep it)",
                )
            )
    rows.append(
        MappingRow(
            _field(job, "containerSettings.imageSourceRegistry.image"),
            source_image or (settings.image_source_registry.image if settings else "(none)"),
            f"docker image {image}" + (f" + pip {', '.join(toolkit_pip)}" if toolkit_pip else ""),
        )
    )
    registry = settings.image_source_registry if settings else None
    credentials = registry.credentials if registry else None
    password_source = secret_url = None
    if credentials is not None:
        if credentials.password_secret_reference is not None:
            password_source, secret_url = "key_vault", credentials.password_secret_reference.secret_url
        else:
            password_source = "environment"
            notes.append(
                Note(
                    job.path_of(credentials) + ".password",
                    "registry-password-from-env",
                    "the registry password is not copied: pipeline.py reads it from AZBAI_REGISTRY_PASSWORD",
                    Severity.INFO,
                )
            )
    shm = settings.shm_size if settings else None
    if shm is not None:
        rows.append(
            MappingRow(_field(job, "containerSettings.shmSize"), shm, "DockerConfiguration(shm_size=…)")
        )
    return Container(
        image=image,
        source_image=source_image,
        registry=registry.server_url if registry and not options.image else None,
        registry_username=credentials.username if credentials and not options.image else None,
        registry_password_source=password_source if not options.image else None,
        registry_password_secret_url=secret_url if not options.image else None,
        shm_size=shm,
        pip_packages=toolkit_pip,
    )


def _compute(
    job: LoadedJob,
    cluster: LoadedCluster | None,
    options: PlanOptions,
    notes: list[Note],
    rows: list[MappingRow],
) -> Compute:
    nodes = job.properties.node_count or 1
    cprops = cluster.properties if cluster else None
    source_size = (cprops.vm_size if cprops and cprops.vm_size else None) or RECIPE_VM_SIZE
    where = (
        "properties.vmSize"
        if cprops and cprops.vm_size
        else "(cluster created with az batchai cluster create -s)"
    )
    chosen = options.vm_size
    retired_from = None
    if chosen is None:
        info = vm_size(source_size)
        replacement = vm_size(info.replacement) if info is not None and info.replacement else None
        if info is not None and info.retired and replacement is not None:
            chosen, retired_from = replacement.name, source_size.upper()
            notes.append(
                Note(
                    where,
                    "retired-vm-size",
                    f"{source_size.upper()} ({info.gpus}× {info.gpu}) is retired: {info.retired}. The cluster uses "
                    f"{chosen} ({replacement.gpus}× {replacement.gpu}) instead; choose another with --vm-size",
                )
            )
            if where.startswith("("):
                notes.append(
                    Note(
                        where,
                        "assumed-vm-size",
                        f"no cluster.json given: assuming the recipes' {RECIPE_VM_SIZE}; pass --cluster or --vm-size",
                        Severity.INFO,
                    )
                )
        else:
            chosen = source_size.upper()
    assert chosen is not None
    info = vm_size(chosen)
    gpus = info.gpus if info else 1
    priority = (cprops.vm_priority if cprops else None) or "dedicated"
    min_nodes, max_nodes = 0, nodes
    scale = cprops.scale_settings if cprops else None
    if scale is not None and scale.auto_scale is not None:
        min_nodes, max_nodes = scale.auto_scale.minimum_node_count, scale.auto_scale.maximum_node_count
    elif scale is not None and scale.manual is not None:
        min_nodes = max_nodes = scale.manual.target_node_count
    if options.max_nodes is not None:
        max_nodes = options.max_nodes
    max_nodes = max(max_nodes, nodes)
    min_nodes = min(min_nodes, max_nodes)
    rows.append(
        MappingRow(
            where,
            source_size,
            f"AmlCompute '{options.compute_name}' of {chosen}, {min_nodes}-{max_nodes} nodes, {priority}",
        )
    )
    if cprops is not None and cprops.node_setup is not None and cprops.node_setup.setup_task is not None:
        notes.append(
            Note(
                "properties.nodeSetup.setupTask",
                "setup-task-unsupported",
                "AmlCompute has no per-node setup task; put its steps in the image or in jobPreparation",
            )
        )
    if cprops is not None and cprops.user_account_settings is not None:
        notes.append(
            Note(
                "properties.userAccountSettings",
                "admin-user-only",
                "AmlCompute takes an admin user only for SSH (admin_username / admin_user_ssh_key); the password is "
                "not copied",
                Severity.INFO,
            )
        )
    return Compute(
        name=options.compute_name,
        vm_size=chosen,
        gpus_per_node=gpus,
        vm_priority=priority,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        source_vm_size=retired_from,
    )


def _variables(job: Job) -> tuple[VariableMapping, ...]:
    rows: list[VariableMapping] = []
    launcher_values = {
        "AZ_BATCHAI_MOUNT_ROOT": "<work>/mounts (each cluster volume linked to its data reference)",
        "AZ_BATCHAI_JOB_MOUNT_ROOT": "<work>/jobs/<job>/mounts (each job volume linked to its data reference)",
        "AZ_BATCHAI_STDOUTERR_DIR": f"{job.std_out_err_path_prefix}/<segment>/stdouterr",
        "AZ_BATCHAI_JOB_TEMP": "<work>/jobs/<job>/temp/node-<n> (per node)",
        "AZ_BATCHAI_JOB_TEMP_DIR": "<work>/jobs",
        "AZ_BATCHAI_SHARED_JOB_TEMP": "<work>/jobs/<job>/shared",
        "AZ_BATCHAI_MPI_HOST_FILE": "<work>/jobs/<job>/hostfile",
        "AZ_BATCHAI_NUM_GPUS": "GPUs visible on the node",
        "AZ_BATCHAI_TASK_INDEX": "rank (TensorFlow: index within ps or worker)",
        "AZ_BATCHAI_PS_HOSTS": "TensorFlow parameter servers host:port list",
        "AZ_BATCHAI_WORKER_HOSTS": "TensorFlow workers host:port list",
        "AZ_BATCHAI_PYTORCH_INIT_METHOD": "tcp://<master>:<port> from Azure ML's MASTER_ADDR/MASTER_PORT",
        "TF_CONFIG": "TensorFlow cluster JSON",
    }
    toolkit = job.launch.toolkit
    only_for = {
        "AZ_BATCHAI_TASK_INDEX": ("tensorflow", "pytorch", "caffe2"),
        "AZ_BATCHAI_PS_HOSTS": ("tensorflow",),
        "AZ_BATCHAI_WORKER_HOSTS": ("tensorflow",),
        "TF_CONFIG": ("tensorflow",),
        "AZ_BATCHAI_PYTORCH_INIT_METHOD": ("pytorch",),
    }
    for name in BATCHAI_VARIABLES:
        if toolkit in only_for.get(name, (toolkit,)):
            rows.append(VariableMapping(name, VariableSource.LAUNCHER, launcher_values[name]))
    for d in job.input_directories:
        value = f"$AZUREML_DATAREFERENCE_{d.data_reference}" if d.data_reference else d.path
        rows.append(VariableMapping(input_variable(d.id), VariableSource.INPUT_DIRECTORY, value))
    for o in job.output_directories:
        composed = f"{o.path_prefix}/<segment>/outputs" + (f"/{o.path_suffix}" if o.path_suffix else "")
        value = (
            f"$AZUREML_DATAREFERENCE_{o.data_reference} (uploaded to {composed})"
            if o.data_reference
            else composed
        )
        rows.append(VariableMapping(output_variable(o.id), VariableSource.OUTPUT_DIRECTORY, value))
    for v in job.environment_variables:
        rows.append(VariableMapping(v.name, VariableSource.USER, v.value))
    for s in job.secrets:
        origin = f"Key Vault {s.secret_url}" if s.secret_url else f"${s.name} in the submitter's environment"
        rows.append(VariableMapping(s.name, VariableSource.SECRET, f"(secret: {origin})"))
    return tuple(rows)
