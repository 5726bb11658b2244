"""The typed model of Batch AI ``job.json`` and ``cluster.json`` files (schemas 2017-09-01-preview, 2018-03-01, 2018-05-01).

Field names follow the Python SDK (``azure.mgmt.batchai.models``); each field's ``spec`` names its JSON key.
Instances come from :func:`azbai.source.reader.read_job` / :func:`read_cluster`, never from hand-filled dicts, so
every value here has passed the checks the reader applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from azbai.source.fields import V2017, V2018_03, V2018_05, Kind, Secret, spec

_SINCE_2018_03 = (V2018_03, V2018_05)
_ONLY_2018_05 = (V2018_05,)
_BEFORE_2018_05 = (V2017, V2018_03)

Shell = Annotated[str, Kind.SHELL]
Rooted = Annotated[str, Kind.ROOTED_PATH]
Relative = Annotated[str, Kind.RELATIVE_PATH]
EnvName = Annotated[str, Kind.ENV_NAME]


# --- shared pieces -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceId:
    """An ARM resource id (``{"id": "/subscriptions/…"}``)."""

    id: str = spec("id", required=True)


@dataclass(frozen=True)
class KeyVaultSecretReference:
    """A secret kept in Azure Key Vault; the reference itself is not secret."""

    source_vault: ResourceId = spec("sourceVault", required=True)
    secret_url: str = spec("secretUrl", required=True)


@dataclass(frozen=True)
class StorageCredentials:
    """Credentials for a storage account: a key (secret) or a Key Vault reference to one."""

    account_key: Secret | None = spec("accountKey", secret=True)
    account_key_secret_reference: KeyVaultSecretReference | None = spec("accountKeySecretReference")


@dataclass(frozen=True)
class EnvironmentVariable:
    """A plain environment variable for the job and its preparation task."""

    name: EnvName = spec("name", required=True)
    value: str | None = spec("value", note="required from 2018-03-01 on")


@dataclass(frozen=True)
class SecretVariable:
    """An environment variable whose value is secret (inline or in Key Vault)."""

    name: EnvName = spec("name", required=True)
    value: Secret | None = spec("value", secret=True)
    value_secret_reference: KeyVaultSecretReference | None = spec("valueSecretReference")


# --- mount volumes -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AzureFileShareReference:
    """An Azure File share mounted with SMB."""

    azure_file_url: str = spec("azureFileUrl", required=True)
    relative_mount_path: Relative = spec("relativeMountPath", required=True)
    account_name: str | None = spec("accountName", note="the Batch AI CLI took it from azureFileUrl")
    credentials: StorageCredentials | None = spec("credentials", note="the Batch AI CLI filled it in")
    file_mode: str | None = spec("fileMode")
    directory_mode: str | None = spec("directoryMode")


@dataclass(frozen=True)
class AzureBlobFileSystemReference:
    """A blob container mounted with blobfuse."""

    account_name: str = spec("accountName", required=True)
    container_name: str = spec("containerName", required=True)
    relative_mount_path: Relative = spec("relativeMountPath", required=True)
    credentials: StorageCredentials | None = spec("credentials", note="the Batch AI CLI filled it in")
    mount_options: str | None = spec("mountOptions")


@dataclass(frozen=True)
class FileServerReference:
    """A Batch AI NFS file server."""

    file_server: ResourceId = spec("fileServer", required=True)
    relative_mount_path: Relative = spec("relativeMountPath", required=True)
    source_directory: str | None = spec("sourceDirectory")
    mount_options: str | None = spec("mountOptions")


@dataclass(frozen=True)
class UnmanagedFileSystemReference:
    """Any file system mounted by a command line (GlusterFS, …)."""

    mount_command: str = spec("mountCommand", required=True)
    relative_mount_path: Relative = spec("relativeMountPath", required=True)


@dataclass(frozen=True)
class MountVolumes:
    """Volumes mounted for a job (under ``$AZ_BATCHAI_JOB_MOUNT_ROOT``) or a cluster (``$AZ_BATCHAI_MOUNT_ROOT``)."""

    azure_file_shares: tuple[AzureFileShareReference, ...] = spec("azureFileShares", factory=tuple)
    azure_blob_file_systems: tuple[AzureBlobFileSystemReference, ...] = spec(
        "azureBlobFileSystems", factory=tuple
    )
    file_servers: tuple[FileServerReference, ...] = spec("fileServers", factory=tuple)
    unmanaged_file_systems: tuple[UnmanagedFileSystemReference, ...] = spec(
        "unmanagedFileSystems", factory=tuple
    )


# --- container -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivateRegistryCredentials:
    """A docker registry login; the password is secret."""

    username: str = spec("username", required=True)
    password: Secret | None = spec("password", secret=True)
    password_secret_reference: KeyVaultSecretReference | None = spec("passwordSecretReference")


@dataclass(frozen=True)
class ImageSourceRegistry:
    """Where the job's docker image comes from."""

    image: str = spec("image", required=True)
    server_url: str | None = spec("serverUrl")
    credentials: PrivateRegistryCredentials | None = spec("credentials")


@dataclass(frozen=True)
class ContainerSettings:
    """The docker container the job runs in."""

    image_source_registry: ImageSourceRegistry = spec("imageSourceRegistry", required=True)
    shm_size: str | None = spec("shmSize", versions=_ONLY_2018_05)


# --- toolkits ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CNTKsettings:
    """CNTK (Python or BrainScript), launched under MPI."""

    language_type: str | None = spec("languageType", enum=("Python", "BrainScript"))
    config_file_path: Shell | None = spec("configFilePath")
    python_script_file_path: Shell | None = spec("pythonScriptFilePath")
    python_interpreter_path: Shell | None = spec("pythonInterpreterPath")
    command_line_args: Shell | None = spec("commandLineArgs")
    process_count: int | None = spec("processCount", minimum=1)


@dataclass(frozen=True)
class PyTorchSettings:
    """PyTorch: one process per rank."""

    python_script_file_path: Shell = spec("pythonScriptFilePath", required=True)
    python_interpreter_path: Shell | None = spec("pythonInterpreterPath")
    command_line_args: Shell | None = spec("commandLineArgs")
    process_count: int | None = spec("processCount", minimum=1)
    communication_backend: str | None = spec("communicationBackend", enum=("TCP", "Gloo", "MPI"))


@dataclass(frozen=True)
class TensorFlowSettings:
    """TensorFlow: parameter servers and workers, or one process."""

    python_script_file_path: Shell = spec("pythonScriptFilePath", required=True)
    python_interpreter_path: Shell | None = spec("pythonInterpreterPath")
    master_command_line_args: Shell | None = spec("masterCommandLineArgs")
    worker_command_line_args: Shell | None = spec("workerCommandLineArgs")
    parameter_server_command_line_args: Shell | None = spec("parameterServerCommandLineArgs")
    worker_count: int | None = spec("workerCount", minimum=1)
    parameter_server_count: int | None = spec("parameterServerCount", minimum=1)


@dataclass(frozen=True)
class CaffeSettings:
    """Caffe: a solver config or a Python script."""

    config_file_path: Shell | None = spec("configFilePath")
    python_script_file_path: Shell | None = spec("pythonScriptFilePath")
    python_interpreter_path: Shell | None = spec("pythonInterpreterPath")
    command_line_args: Shell | None = spec("commandLineArgs")
    process_count: int | None = spec("processCount", minimum=1)


@dataclass(frozen=True)
class Caffe2Settings:
    """Caffe2: one process per node."""

    python_script_file_path: Shell = spec("pythonScriptFilePath", required=True)
    python_interpreter_path: Shell | None = spec("pythonInterpreterPath")
    command_line_args: Shell | None = spec("commandLineArgs")


@dataclass(frozen=True)
class ChainerSettings:
    """ChainerMN, launched under MPI."""

    python_script_file_path: Shell = spec("pythonScriptFilePath", required=True)
    python_interpreter_path: Shell | None = spec("pythonInterpreterPath")
    command_line_args: Shell | None = spec("commandLineArgs")
    process_count: int | None = spec("processCount", minimum=1)


@dataclass(frozen=True)
class CustomToolkitSettings:
    """A shell command line run once, on the master node."""

    command_line: Shell | None = spec("commandLine")


@dataclass(frozen=True)
class CustomMpiSettings:
    """A command line run by the MPI runtime, ``processCount`` times."""

    command_line: Shell = spec("commandLine", required=True)
    process_count: int | None = spec("processCount", minimum=1)


@dataclass(frozen=True)
class HorovodSettings:
    """Horovod, launched under MPI."""

    python_script_file_path: Shell = spec("pythonScriptFilePath", required=True)
    python_interpreter_path: Shell | None = spec("pythonInterpreterPath")
    command_line_args: Shell | None = spec("commandLineArgs")
    process_count: int | None = spec("processCount", minimum=1)


Toolkit = (
    CNTKsettings
    | PyTorchSettings
    | TensorFlowSettings
    | CaffeSettings
    | Caffe2Settings
    | ChainerSettings
    | CustomToolkitSettings
    | CustomMpiSettings
    | HorovodSettings
)


# --- job -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputDirectory:
    """A directory the job reads, published as ``$AZ_BATCHAI_INPUT_<id>``. A pure alias: nothing is copied."""

    id: EnvName = spec("id", required=True)
    path: Rooted = spec("path", required=True)


@dataclass(frozen=True)
class OutputDirectory:
    """A directory Batch AI created for the job: ``pathPrefix/<segment>/outputs[/pathSuffix]``."""

    id: EnvName = spec("id", required=True)
    path_prefix: Rooted = spec("pathPrefix", required=True)
    path_suffix: Relative | None = spec("pathSuffix")
    type: str | None = spec(
        "type",
        enum=("model", "logs", "summary", "custom"),
        versions=(V2017,),
        note="only the 2017-09-01-preview API knew it; later APIs ignored it",
    )
    create_new: bool | None = spec(
        "createNew", versions=(V2017,), note="only the 2017-09-01-preview API knew it; later APIs ignored it"
    )


@dataclass(frozen=True)
class JobPreparation:
    """A command line run on every node before the toolkit starts."""

    command_line: Shell = spec("commandLine", required=True)


@dataclass(frozen=True)
class JobConstraints:
    """Limits on the job."""

    max_wall_clock_time: Annotated[timedelta, Kind.DURATION] | None = spec("maxWallClockTime")


#: JSON key → model field name, for the toolkit settings (exactly one must be present)
TOOLKIT_KEYS = {
    "cntkSettings": "cntk_settings",
    "pyTorchSettings": "py_torch_settings",
    "tensorFlowSettings": "tensor_flow_settings",
    "caffeSettings": "caffe_settings",
    "caffe2Settings": "caffe2_settings",
    "chainerSettings": "chainer_settings",
    "customToolkitSettings": "custom_toolkit_settings",
    "customMpiSettings": "custom_mpi_settings",
    "horovodSettings": "horovod_settings",
}


@dataclass(frozen=True)
class JobProperties:
    """The ``properties`` of a Batch AI job (``JobCreateParameters``)."""

    node_count: int | None = spec("nodeCount", minimum=1, note="defaults to 1")
    cntk_settings: CNTKsettings | None = spec("cntkSettings")
    py_torch_settings: PyTorchSettings | None = spec("pyTorchSettings", versions=_SINCE_2018_03)
    tensor_flow_settings: TensorFlowSettings | None = spec("tensorFlowSettings")
    caffe_settings: CaffeSettings | None = spec("caffeSettings")
    caffe2_settings: Caffe2Settings | None = spec("caffe2Settings")
    chainer_settings: ChainerSettings | None = spec("chainerSettings")
    custom_toolkit_settings: CustomToolkitSettings | None = spec("customToolkitSettings")
    custom_mpi_settings: CustomMpiSettings | None = spec("customMpiSettings", versions=_ONLY_2018_05)
    horovod_settings: HorovodSettings | None = spec("horovodSettings", versions=_ONLY_2018_05)
    std_out_err_path_prefix: Rooted | None = spec("stdOutErrPathPrefix")
    mount_volumes: MountVolumes | None = spec("mountVolumes", versions=_SINCE_2018_03)
    input_directories: tuple[InputDirectory, ...] = spec("inputDirectories", factory=tuple)
    output_directories: tuple[OutputDirectory, ...] = spec("outputDirectories", factory=tuple)
    environment_variables: tuple[EnvironmentVariable, ...] = spec("environmentVariables", factory=tuple)
    secrets: tuple[SecretVariable, ...] = spec("secrets", factory=tuple, versions=_SINCE_2018_03)
    job_preparation: JobPreparation | None = spec("jobPreparation")
    container_settings: ContainerSettings | None = spec("containerSettings")
    constraints: JobConstraints | None = spec("constraints")
    scheduling_priority: str | None = spec(
        "schedulingPriority", enum=("low", "normal", "high"), versions=_ONLY_2018_05
    )
    cluster: ResourceId | None = spec("cluster")
    priority: int | None = spec(
        "priority",
        minimum=-1000,
        maximum=1000,
        versions=_BEFORE_2018_05,
        note="2018-05-01 replaced it with schedulingPriority",
    )
    experiment_name: str | None = spec(
        "experimentName", versions=_BEFORE_2018_05, note="2018-05-01 names the experiment on the command line"
    )
    location: str | None = spec("location", versions=_BEFORE_2018_05, note="2018-05-01 takes the workspace's")

    @property
    def toolkit_key(self) -> str | None:
        """The JSON key of the toolkit settings present (``cntkSettings`` …), or None."""
        for key, attr in TOOLKIT_KEYS.items():
            if getattr(self, attr) is not None:
                return key
        return None

    @property
    def toolkit(self) -> Toolkit | None:
        """The toolkit settings object, or None."""
        key = self.toolkit_key
        return getattr(self, TOOLKIT_KEYS[key]) if key else None


# --- cluster -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManualScaleSettings:
    """A fixed-size cluster."""

    target_node_count: int = spec("targetNodeCount", required=True, minimum=0)
    node_deallocation_option: str | None = spec(
        "nodeDeallocationOption", enum=("requeue", "terminate", "waitforjobcompletion")
    )


@dataclass(frozen=True)
class AutoScaleSettings:
    """A cluster that grows with queued jobs between a minimum and a maximum."""

    minimum_node_count: int = spec("minimumNodeCount", required=True, minimum=0)
    maximum_node_count: int = spec("maximumNodeCount", required=True, minimum=1)
    initial_node_count: int | None = spec("initialNodeCount", minimum=0)


@dataclass(frozen=True)
class ScaleSettings:
    """Manual or automatic scaling."""

    manual: ManualScaleSettings | None = spec("manual")
    auto_scale: AutoScaleSettings | None = spec("autoScale")


@dataclass(frozen=True)
class ImageReference:
    """The OS image of the nodes."""

    publisher: str = spec("publisher", required=True)
    offer: str = spec("offer", required=True)
    sku: str = spec("sku", required=True)
    version: str | None = spec("version")
    virtual_machine_image_id: str | None = spec("virtualMachineImageId")


@dataclass(frozen=True)
class VirtualMachineConfiguration:
    """OS image configuration."""

    image_reference: ImageReference | None = spec("imageReference")


@dataclass(frozen=True)
class SetupTask:
    """A command line run on every node when it is allocated or rebooted."""

    command_line: Shell = spec("commandLine", required=True)
    std_out_err_path_prefix: Rooted | None = spec("stdOutErrPathPrefix")
    environment_variables: tuple[EnvironmentVariable, ...] = spec("environmentVariables", factory=tuple)
    secrets: tuple[SecretVariable, ...] = spec("secrets", factory=tuple)
    run_elevated: bool | None = spec(
        "runElevated", versions=(V2018_03,), note="2018-05-01 always ran it as root"
    )


@dataclass(frozen=True)
class AppInsightsReference:
    """Where node performance counters went."""

    component: ResourceId = spec("component", required=True)
    instrumentation_key: Secret | None = spec("instrumentationKey", secret=True)
    instrumentation_key_secret_reference: KeyVaultSecretReference | None = spec(
        "instrumentationKeySecretReference"
    )


@dataclass(frozen=True)
class PerformanceCountersSettings:
    """Performance counter upload."""

    app_insights_reference: AppInsightsReference = spec("appInsightsReference", required=True)


@dataclass(frozen=True)
class NodeSetup:
    """Per-node setup: a task, cluster-level mounts, performance counters."""

    setup_task: SetupTask | None = spec("setupTask")
    mount_volumes: MountVolumes | None = spec("mountVolumes")
    performance_counters_settings: PerformanceCountersSettings | None = spec("performanceCountersSettings")


@dataclass(frozen=True)
class UserAccountSettings:
    """The administrator account on every node; the password is secret."""

    admin_user_name: str = spec("adminUserName", required=True)
    admin_user_ssh_public_key: str | None = spec("adminUserSshPublicKey")
    admin_user_password: Secret | None = spec("adminUserPassword", secret=True)


@dataclass(frozen=True)
class ClusterProperties:
    """The ``properties`` of a Batch AI cluster (``ClusterCreateParameters``)."""

    vm_size: str | None = spec("vmSize")
    vm_priority: str | None = spec("vmPriority", enum=("dedicated", "lowpriority"))
    scale_settings: ScaleSettings | None = spec("scaleSettings")
    virtual_machine_configuration: VirtualMachineConfiguration | None = spec("virtualMachineConfiguration")
    node_setup: NodeSetup | None = spec("nodeSetup")
    user_account_settings: UserAccountSettings | None = spec("userAccountSettings")
    subnet: ResourceId | None = spec("subnet")
    location: str | None = spec("location", versions=_BEFORE_2018_05)


@dataclass(frozen=True)
class JobConfig:
    """A whole job file: its declared schema version and its properties."""

    properties: JobProperties
    schema_url: str | None
    schema_version: str | None
    wrapped: bool


@dataclass(frozen=True)
class ClusterConfig:
    """A whole cluster file."""

    properties: ClusterProperties
    schema_url: str | None
    schema_version: str | None
    wrapped: bool
