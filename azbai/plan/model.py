"""The plan: what a Batch AI job becomes, as neutral, frozen, pure data.

The plan imports nothing from ``azure.*`` and does no I/O. Targets read it: the Azure ML SDK v1 builder, the code
generator, the local runner and the compatibility launcher. :func:`azbai.plan.serialize.plan_to_dict` gives its
deterministic JSON form (``plan.json``), which is also the golden file in the tests.

It never holds a secret value: storage keys, registry passwords and job ``secrets`` appear only as references
(the environment variable or Key Vault secret a value comes from).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass

PLAN_FORMAT = 2

#: the account name of a datastore whose job.json left the Batch AI CLI's placeholder (``account_placeholder``)
ACCOUNT_PLACEHOLDER = "<AZURE_BATCHAI_STORAGE_ACCOUNT>"

#: the Batch AI 2018-05-01 layout of ``jobOutputDirectoryPathSegment`` (catalogue §8.3)
SEGMENT_TEMPLATE = (
    "{subscription}/{resource_group}/workspaces/{workspace}/experiments/{experiment}/jobs/{job}/{job_uuid}"
)


#: the most nodes and processes a local job simulates on one machine (each process is a real one)
LOCAL_MAX_NODES = 64
LOCAL_MAX_PROCESSES = 256

#: where a data reference's path takes the job's output segment
SEGMENT_TOKEN = "{segment}"


def fill_segment(path: str, segment: str) -> str:
    """A ``path_on_datastore`` with its ``{segment}`` filled in. A path that holds the token is a template whose
    literal braces are doubled (:func:`escape_braces`: a user's own ``{segment}`` is ``{{segment}}``); a path
    without it is literal."""
    if SEGMENT_TOKEN not in path:
        return path
    return re.sub(
        r"\{\{|\}\}|\{segment\}", lambda m: segment if m.group() == SEGMENT_TOKEN else m.group()[0], path
    )


def escape_braces(text: str) -> str:
    """A user's text made literal inside a ``path_on_datastore`` (see :func:`fill_segment`)."""
    return text.replace("{", "{{").replace("}", "}}")


class DataMode(enum.Enum):
    """How a datastore path reaches the compute (Azure ML v1 ``DataReference`` modes)."""

    MOUNT = "mount"
    DOWNLOAD = "download"
    UPLOAD = "upload"


class StoreKind(enum.Enum):
    """What a datastore points at."""

    BLOB_CONTAINER = "blob_container"
    FILE_SHARE = "file_share"


class CredentialKind(enum.Enum):
    """Where a datastore's credential comes from. Never the value itself."""

    #: the account key, read from ``AZURE_BATCHAI_STORAGE_KEY`` when the pipeline is submitted
    ACCOUNT_KEY_FROM_ENV = "account_key_from_env"
    #: the account key kept in an Azure Key Vault secret
    KEY_VAULT = "key_vault"
    #: the workspace already has the datastore (or its identity has access); nothing to register
    WORKSPACE = "workspace"


class VolumeKind(enum.Enum):
    """What a Batch AI mount was."""

    AZURE_FILE_SHARE = "azure_file_share"
    AZURE_BLOB = "azure_blob"
    FILE_SERVER = "file_server"
    UNMANAGED = "unmanaged"
    #: a mount the job uses (``$AZ_BATCHAI_MOUNT_ROOT/external``) but no file describes
    UNDESCRIBED = "undescribed"


class MountRoot(enum.Enum):
    """Under which root a volume is mounted."""

    JOB = "AZ_BATCHAI_JOB_MOUNT_ROOT"
    CLUSTER = "AZ_BATCHAI_MOUNT_ROOT"


class LaunchMode(enum.Enum):
    """How the toolkit's processes are started (catalogue §8.6)."""

    #: ``processCount`` ranks under MPI, one interleaved ``stdout.txt``/``stderr.txt`` (cntk, chainer, horovod, customMpi)
    MPI = "mpi"
    #: independent processes, one log pair per process (pytorch ``stdout-<rank>.txt``, caffe2)
    PER_PROCESS = "per_process"
    #: TensorFlow parameter servers and workers (``stdout-ps-<i>.txt``, ``stdout-wk-<i>.txt``)
    PARAMETER_SERVER = "parameter_server"
    #: one shell command on the master node (customToolkit)
    MASTER_ONLY = "master_only"


class Distribution(enum.Enum):
    """How Azure ML starts the step's processes on the cluster."""

    NONE = "none"
    MPI = "mpi"
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"


class VariableSource(enum.Enum):
    """Where the value of a job environment variable comes from."""

    LAUNCHER = "launcher"
    INPUT_DIRECTORY = "input_directory"
    OUTPUT_DIRECTORY = "output_directory"
    USER = "user"
    SECRET = "secret"


class Severity(enum.Enum):
    """How much a target note matters."""

    INFO = "info"
    WARNING = "warning"


@dataclass(frozen=True)
class Datastore:
    """An Azure ML datastore to register: one per distinct (kind, account, container or share)."""

    name: str
    kind: StoreKind
    account_name: str
    container_name: str
    credential: CredentialKind
    #: ``core.windows.net`` unless the share URL said otherwise (sovereign clouds)
    endpoint: str = "core.windows.net"
    #: the account name is the CLI placeholder: the generated code asks for it
    account_placeholder: bool = False
    #: Key Vault secret URL of the account key, for ``CredentialKind.KEY_VAULT``
    key_secret_url: str | None = None
    #: the workspace's own default datastore (outputs that were on no described volume)
    workspace_default: bool = False


@dataclass(frozen=True)
class DataReference:
    """A datastore path given to the step (Azure ML v1 ``DataReference``).

    ``path_on_datastore`` may contain ``{segment}``, filled with the job's output segment when the pipeline is built.
    ``path_on_compute`` is relative to the step's working directory (None: Azure ML chooses, as for mounts).
    """

    name: str
    datastore: str
    path_on_datastore: str
    mode: DataMode
    path_on_compute: str | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class Volume:
    """A Batch AI mount and what replaces it."""

    name: str
    kind: VolumeKind
    root: MountRoot
    relative_mount_path: str
    #: the data reference (mode mount) that gives the volume's content; None when Azure ML cannot mount it
    data_reference: str | None
    source_path: str


@dataclass(frozen=True)
class InputDirectory:
    """``$AZ_BATCHAI_INPUT_<id>``: an alias of ``path``, or a downloaded copy when ``data_reference`` is set."""

    id: str
    path: str
    data_reference: str | None = None


@dataclass(frozen=True)
class OutputDirectory:
    """``$AZ_BATCHAI_OUTPUT_<id>``: ``path_prefix/<segment>/outputs[/path_suffix]``.

    With ``data_reference`` the process writes to a local directory that is uploaded to the same path on the
    datastore when the job ends, also when it fails.
    """

    id: str
    path_prefix: str
    path_suffix: str | None = None
    data_reference: str | None = None


@dataclass(frozen=True)
class EnvironmentVariable:
    """A plain job variable (not secret)."""

    name: str
    value: str


@dataclass(frozen=True)
class SecretReference:
    """A job secret by name: its value comes from the submitter's environment or a Key Vault, never the plan."""

    name: str
    #: ``environment`` (the value was inline in job.json, supplied at run/submit time) or ``key_vault``
    source: str
    secret_url: str | None = None


@dataclass(frozen=True)
class ProcessGroup:
    """``count`` processes running ``command`` (a shell command line, as Batch AI ran it).

    ``stdout``/``stderr`` are file names under ``stdouterr/``; ``{index}`` is the index within the group.
    """

    role: str
    count: int
    command: str
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Launch:
    """How the toolkit's processes start."""

    toolkit: str
    mode: LaunchMode
    node_count: int
    process_count: int
    groups: tuple[ProcessGroup, ...]
    distribution: Distribution
    #: PyTorch ``communicationBackend`` (lower case), when given
    backend: str | None = None


@dataclass(frozen=True)
class VariableMapping:
    """How one job environment variable is reproduced (the plan's answer to every ``$AZ_BATCHAI_*`` name)."""

    name: str
    source: VariableSource
    value: str


@dataclass(frozen=True)
class Job:
    """Everything the compatibility launcher needs to recreate the Batch AI job environment and run it."""

    name: str
    node_count: int
    std_out_err_path_prefix: str
    volumes: tuple[Volume, ...]
    input_directories: tuple[InputDirectory, ...]
    output_directories: tuple[OutputDirectory, ...]
    environment_variables: tuple[EnvironmentVariable, ...]
    secrets: tuple[SecretReference, ...]
    job_preparation: str | None
    launch: Launch
    max_wall_clock_seconds: int | None = None
    segment_template: str = SEGMENT_TEMPLATE


@dataclass(frozen=True)
class Container:
    """The docker image the step runs in."""

    image: str
    #: the image job.json named, when azbai replaced a retired framework image
    source_image: str | None = None
    registry: str | None = None
    registry_username: str | None = None
    #: where the registry password comes from (``environment`` or ``key_vault``); never the password
    registry_password_source: str | None = None
    registry_password_secret_url: str | None = None
    shm_size: str | None = None
    pip_packages: tuple[str, ...] = ()

    @property
    def own_image(self) -> bool:
        """Whether the step runs in the job's own image (kept from job.json, ``--keep-image``, or named with
        ``--image``) rather than an Azure ML base image, which azbai puts in place of a retired one (or of none).

        Only a base image takes a conda environment (v1's ``CondaDependencies``, v2's ``conda_file``): on the job's
        own image one would run in front of the image's Python and hide its packages (horovod, torch), so that image
        is used as it is. Azure ML's curated images carry their framework and count as the job's own.
        """
        return not _AZUREML_BASE_IMAGE.match(self.image)


#: Azure ML's base images (not its curated framework images)
_AZUREML_BASE_IMAGE = re.compile(r"mcr\.microsoft\.com/azureml/(?!curated/)[^/]+$")


@dataclass(frozen=True)
class Compute:
    """The Azure ML compute cluster (AmlCompute) that replaces the Batch AI cluster."""

    name: str
    vm_size: str
    gpus_per_node: int
    vm_priority: str
    min_nodes: int
    max_nodes: int
    idle_seconds_before_scaledown: int = 1800
    #: the Batch AI VM size, when it was retired and replaced
    source_vm_size: str | None = None


@dataclass(frozen=True)
class Step:
    """One pipeline step: the launcher running a Batch AI job on a compute target.

    ``data_references`` names what the step reads and writes: data references, pipeline data (produced here when
    the step is its producer, read otherwise) and data-path parameters.
    """

    name: str
    job: Job
    data_references: tuple[str, ...]
    allow_reuse: bool = False
    #: a compute of ``Plan.extra_computes``; None: the plan's compute
    compute: str | None = None
    #: None: the plan's container
    container: Container | None = None
    kind: str = "job"


@dataclass(frozen=True)
class ParallelStep:
    """A step that applies an entry script (``init()`` / ``run(mini_batch)``) to every file of its input, in parallel.

    Azure ML v1 runs it as a ``ParallelRunStep``; locally a pool of worker processes runs the same entry script.
    ``arguments`` may hold ``{parameters.NAME}``.
    """

    name: str
    source_directory: str
    entry_script: str
    input: str
    output: str
    arguments: tuple[str, ...] = ()
    mini_batch_size: int = 1
    error_threshold: int = 0
    process_count_per_node: int = 1
    node_count: int = 1
    max_retries: int = 3
    run_invocation_timeout: int = 600
    pip_packages: tuple[str, ...] = ()
    compute: str | None = None
    allow_reuse: bool = True
    kind: str = "parallel"


class ParameterKind(enum.Enum):
    """What a pipeline parameter holds."""

    STRING = "string"
    #: a path on a datastore (Azure ML ``DataPath``), given to a step as a downloaded input
    DATA_PATH = "data_path"


@dataclass(frozen=True)
class PipelineParameter:
    """A value chosen when a pipeline run starts (``PipelineParameter``)."""

    name: str
    kind: ParameterKind
    default: str
    datastore: str | None = None


@dataclass(frozen=True)
class PipelineData:
    """A directory one step writes and later steps read (``PipelineData`` / ``OutputFileDatasetConfig``)."""

    name: str
    producer: str
    datastore: str


@dataclass(frozen=True)
class Trigger:
    """Start a pipeline run for each new blob under a path (Azure ML ``Schedule`` with a datastore trigger)."""

    datastore: str
    path_on_datastore: str
    data_path_parameter: str
    polling_interval_minutes: int = 5
    pattern: str = "*"
    #: ``path``: the new blob's path is the parameter; ``content``: the blob's text is (a Batch AI trigger file)
    use: str = "path"


@dataclass(frozen=True)
class Note:
    """Something a target cannot honour, or a choice azbai made, tied to the Batch AI field it concerns.

    ``code`` is stable (``undescribed-mount``, ``retired-vm-size``, …): match on it, never on the message.
    """

    field: str
    code: str
    message: str
    severity: Severity = Severity.WARNING


@dataclass(frozen=True)
class MappingRow:
    """One line of MIGRATION.md: a Batch AI field and what it became."""

    field: str
    value: str
    became: str


@dataclass(frozen=True)
class Source:
    """Where the plan came from."""

    file: str
    schema_version: str | None
    toolkit: str
    cluster_file: str | None = None


@dataclass(frozen=True)
class Plan:
    """A migrated Batch AI job: datastores, data references, the job, its container and compute, one pipeline."""

    name: str
    experiment: str
    source: Source
    datastores: tuple[Datastore, ...]
    data_references: tuple[DataReference, ...]
    container: Container
    compute: Compute
    steps: tuple[Step | ParallelStep, ...]
    variables: tuple[VariableMapping, ...]
    notes: tuple[Note, ...]
    mapping: tuple[MappingRow, ...]
    format: int = PLAN_FORMAT
    parameters: tuple[PipelineParameter, ...] = ()
    pipeline_data: tuple[PipelineData, ...] = ()
    extra_computes: tuple[Compute, ...] = ()
    trigger: Trigger | None = None

    def datastore(self, name: str) -> Datastore:
        """The datastore called ``name``."""
        for store in self.datastores:
            if store.name == name:
                return store
        raise KeyError(name)

    def data_reference(self, name: str) -> DataReference:
        """The data reference called ``name``."""
        for ref in self.data_references:
            if ref.name == name:
                return ref
        raise KeyError(name)

    def step(self, name: str) -> Step | ParallelStep:
        """The step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def job_steps(self) -> tuple[Step, ...]:
        """The steps that run a Batch AI job through the launcher."""
        return tuple(s for s in self.steps if isinstance(s, Step))

    def to_json(self) -> str:
        """The plan as deterministic JSON (``plan.json``): no secret in it."""
        from azbai.plan.serialize import plan_to_json

        return plan_to_json(self)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan of :meth:`to_json`'s text; :class:`~azbai.errors.PlanError` for another format or a damaged one."""
        from azbai.plan.serialize import plan_from_json

        return plan_from_json(text)

    def with_parameters(self, **values: str) -> Plan:
        """A copy whose pipeline parameters default to ``values``; :class:`~azbai.errors.PlanError` for unknown ones."""
        from azbai.errors import PlanError

        known = {p.name for p in self.parameters}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PlanError(
                f"{self.name!r} has no parameter {', '.join(unknown)} (parameters: {', '.join(sorted(known)) or 'none'})"
            )
        parameters = tuple(
            dataclasses.replace(p, default=str(values[p.name])) if p.name in values else p
            for p in self.parameters
        )
        return dataclasses.replace(self, parameters=parameters)

    def compute_named(self, name: str | None) -> Compute:
        """A compute by name (None: the plan's main compute)."""
        if name is None or name == self.compute.name:
            return self.compute
        for compute in self.extra_computes:
            if compute.name == name:
                return compute
        raise KeyError(name)
