"""The Azure ML side: every call of :mod:`azbai.aml` on an Azure ML workspace, as the real SDK v1 objects.

This is the only module of the package that imports ``azureml`` (lazily, when called), and the one boundary where
the SDK's exceptions become :class:`~azbai.errors.TargetError` (:func:`sdk_errors`), with any key or SAS token
given to it removed from the message.

============================================  ========================================================================
azbai                                         Azure ML SDK v1
============================================  ========================================================================
``Workspace.from_config()``                   ``azureml.core.Workspace.from_config()``
``Datastore.register_azure_blob_container``   ``azureml.core.Datastore.register_azure_blob_container`` (dry run: an
                                              ``AzureBlobDatastore`` built offline)
``Datastore.register_azure_file_share``       ``azureml.core.Datastore.register_azure_file_share`` (dry run:
                                              ``AzureFileDatastore``)
``ds.path(p).as_mount()`` …                   ``azureml.data.data_reference.DataReference``
``Estimator(...)``                            ``azureml.train.estimator.Estimator`` (``Mpi`` for several processes)
``ScriptRunConfig(...)``                      ``azureml.core.ScriptRunConfig`` with ``run_config.data_references``
                                              (``MpiConfiguration`` for several processes)
``Experiment(ws, name).submit(config)``       ``azureml.core.Experiment(ws, name).submit(...)``: the SDK's ``Run``
``Schedule.create(ws, ...)``                  ``azureml.pipeline.core.Schedule.create(...)``
============================================  ========================================================================
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from azbai.aml.data_reference import MODES, DataReference, DataReferenceConfiguration
from azbai.aml.datastore import Datastore
from azbai.aml.estimator import Estimator, ScriptRunConfig, is_reference
from azbai.aml.registry import BLOB, DEFAULT_BLOB_STORE, check_datastore_name, unknown_datastore
from azbai.errors import AzbaiError, PlanError, StorageError, TargetError
from azbai.plan.model import Plan

if TYPE_CHECKING:
    from azbai.aml.workspace import Workspace


@contextlib.contextmanager
def sdk_errors(doing: str, secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Translate what the SDK raises into :class:`TargetError` (``ImportError``: azureml is not installed)."""
    try:
        yield
    except AzbaiError:
        raise
    except ImportError as exc:
        raise TargetError(
            f"{doing}: the Azure ML SDK v1 is not installed (pip install 'azbai[azureml]')"
        ) from exc
    except Exception as exc:  # the SDK raises many unrelated types
        message = _message(exc)
        for secret in secrets:
            if secret:
                message = message.replace(secret, "***")
        raise TargetError(f"{doing}: {type(exc).__name__}: {message}") from exc


def _message(exc: Exception) -> str:
    """The SDK's message on one line ("TrainingException:\n\tMessage: …" → "Message: …"), at most 400 characters."""
    text = str(getattr(exc, "message", None) or exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if line.rstrip(":") != type(exc).__name__]
    joined = " ".join(lines)
    return joined if len(joined) <= 400 else joined[:399] + "…"


# -- workspaces ----------------------------------------------------------------------------------------------------


def workspace_from_config(path: str | None, auth: Any) -> Any:
    """``azureml.core.Workspace.from_config``."""
    with sdk_errors("reading the Azure ML workspace config"):
        from azureml.core import Workspace

        return Workspace.from_config(path=path, auth=auth)


def offline_workspace() -> Any:
    """An ``azureml.core.Workspace`` with a fake token that never contacts Azure."""
    with sdk_errors("building an offline workspace"):
        from azbai.targets.azureml_v1 import offline

        return offline.workspace()


# -- datastores ----------------------------------------------------------------------------------------------------


def register(workspace: Workspace, datastore_type: str, arguments: dict[str, Any]) -> Any:
    """Register a datastore on Azure ML (dry run: build the datastore object a registration returns)."""
    name = check_datastore_name(arguments["datastore_name"])
    secrets = (arguments.get("account_key"), arguments.get("sas_token"))
    with sdk_errors(f"registering datastore {name!r}", secrets):
        from azureml.core import Datastore as AzureMLDatastore

        if not workspace.dry_run:
            if datastore_type == BLOB:
                return AzureMLDatastore.register_azure_blob_container(workspace.azureml, **arguments)
            return AzureMLDatastore.register_azure_file_share(workspace.azureml, **arguments)
        from azureml.data.azure_storage_datastore import AzureBlobDatastore, AzureFileDatastore

        cls = AzureBlobDatastore if datastore_type == BLOB else AzureFileDatastore
        container = arguments["container_name"] if datastore_type == BLOB else arguments["file_share_name"]
        datastore = cls(
            workspace.azureml,
            name,
            container,
            arguments["account_name"],
            sas_token=arguments.get("sas_token"),
            account_key=arguments.get("account_key"),
            protocol=arguments.get("protocol"),
            endpoint=arguments.get("endpoint") or "core.windows.net",
        )
        workspace.offline_datastores[name] = datastore
        return datastore


def _offline_stores(workspace: Workspace) -> dict[str, Any]:
    if DEFAULT_BLOB_STORE not in workspace.offline_datastores:
        with sdk_errors("building the offline default datastore"):
            from azureml.data.azure_storage_datastore import AzureBlobDatastore

            workspace.offline_datastores[DEFAULT_BLOB_STORE] = AzureBlobDatastore(
                workspace.azureml, DEFAULT_BLOB_STORE, "azureml-blobstore-offline", "offlinestore"
            )
    return workspace.offline_datastores


def get_datastore(workspace: Workspace, name: str | None) -> Any:
    """A registered datastore (None: the default)."""
    if workspace.dry_run:
        stores = _offline_stores(workspace)
        name = name or workspace.offline_default or DEFAULT_BLOB_STORE
        if name not in stores:
            raise unknown_datastore(name, stores)
        return stores[name]
    with sdk_errors(f"getting datastore {name!r}"):
        from azureml.core import Datastore as AzureMLDatastore

        if name is None:
            return workspace.azureml.get_default_datastore()
        return AzureMLDatastore.get(workspace.azureml, name)


def default_datastore(workspace: Workspace) -> Any:
    """The workspace's default datastore."""
    return get_datastore(workspace, None)


def set_default_datastore(workspace: Workspace, name: str) -> None:
    """Make ``name`` the default datastore."""
    if workspace.dry_run:
        get_datastore(workspace, name)
        workspace.offline_default = name
        return
    with sdk_errors(f"setting the default datastore to {name!r}"):
        workspace.azureml.set_default_datastore(name)


def datastores(workspace: Workspace) -> dict[str, Any]:
    """Every registered datastore, by name."""
    if workspace.dry_run:
        return dict(sorted(_offline_stores(workspace).items()))
    with sdk_errors("listing the datastores"):
        return dict(workspace.azureml.datastores)


# -- data references -----------------------------------------------------------------------------------------------


def data_reference(
    datastore: Any,
    name: str | None,
    path_on_datastore: str | None,
    mode: str,
    path_on_compute: str | None,
    overwrite: bool,
) -> Any:
    """``azureml.data.data_reference.DataReference`` on an Azure ML datastore."""
    if mode not in MODES:
        raise PlanError(f"data reference {name!r}: mode {mode!r} is not one of {', '.join(MODES)}")
    with sdk_errors(f"building data reference {name!r}"):
        from azureml.data.data_reference import DataReference as AzureMLDataReference

        return AzureMLDataReference(
            datastore,
            data_reference_name=name,
            path_on_datastore=path_on_datastore,
            mode=mode,
            path_on_compute=path_on_compute,
            overwrite=overwrite,
        )


def to_azureml_reference(workspace: Workspace, ref: Any) -> Any:
    """An azbai reference (or configuration) as the SDK's, on the workspace's datastore of the same name."""
    if isinstance(ref, DataReference):
        store = get_datastore(workspace, ref.datastore.name)
        return data_reference(
            store,
            ref.data_reference_name,
            ref.path_on_datastore,
            ref.mode,
            ref.path_on_compute,
            ref.overwrite,
        )
    if isinstance(ref, DataReferenceConfiguration):
        get_datastore(workspace, ref.data_store_name)  # an unknown datastore fails here, by name
        with sdk_errors(f"building the configuration of data reference on {ref.data_store_name!r}"):
            from azureml.core.runconfig import DataReferenceConfiguration as AzureMLConfiguration

            return AzureMLConfiguration(
                datastore_name=ref.data_store_name,
                mode=ref.mode,
                path_on_datastore=ref.path_on_data_store,
                path_on_compute=ref.path_on_compute,
                overwrite=ref.overwrite,
            )
    return ref  # already the SDK's


def _config(reference: Any) -> Any:
    """The SDK's ``DataReferenceConfiguration`` of an SDK reference (a configuration stays as it is)."""
    return reference.to_config() if hasattr(reference, "to_config") else reference


def _remote_workspace(workspace: Workspace, what: str) -> Any:
    if workspace.azureml is None:
        raise TargetError(
            f"{what}: to_azureml needs an Azure ML workspace (azbai.Workspace.from_config() or .offline())"
        )
    return workspace.azureml


# -- estimators and script runs ------------------------------------------------------------------------------------


def estimator(spec: Estimator, workspace: Workspace) -> Any:
    """``azureml.train.estimator.Estimator`` for ``spec``: the same references (same objects), nodes and processes."""
    _remote_workspace(workspace, "Estimator")
    spec.check()
    references = {name: to_azureml_reference(workspace, ref) for name, ref in spec.data_references().items()}

    def value(item: Any) -> Any:
        return references[item.data_reference_name] if is_reference(item) else item

    if spec.script_params is not None and not isinstance(spec.script_params, dict):
        raise PlanError("Azure ML's Estimator takes script_params as a dict ({'--data': ref, ...})")
    params = {key: value(v) for key, v in (spec.script_params or {}).items()}
    inputs = [references[i.data_reference_name] for i in spec.inputs if is_reference(i)]
    with sdk_errors(f"building the Estimator of {spec.script!r}"):
        from azureml.train.estimator import Estimator as AzureMLEstimator

        distributed = None
        if spec.node_count * spec.process_count_per_node > 1:
            from azureml.train.dnn import Mpi

            distributed = Mpi(process_count_per_node=spec.process_count_per_node)
        built = AzureMLEstimator(
            source_directory=spec.source_directory,
            compute_target=spec.compute_target,
            entry_script=spec.script,
            script_params=params or None,
            node_count=spec.node_count,
            distributed_training=distributed,
            inputs=inputs or None,
            environment_variables=dict(spec.run_config.environment_variables) or None,
            pip_packages=spec.pip_packages or None,
            conda_packages=spec.conda_packages or None,
            custom_docker_image=spec.custom_docker_image,
            use_gpu=spec.use_gpu,
            use_docker=spec.use_docker,
            max_run_duration_seconds=spec.max_run_duration_seconds,
        )
        for name, ref in references.items():  # references named only in run_config (as strings in the params)
            built.run_config.data_references.setdefault(name, _config(ref))
        return built


def script_run_config(spec: ScriptRunConfig, workspace: Workspace) -> Any:
    """``azureml.core.ScriptRunConfig`` for ``spec``, with ``run_config.data_references`` as the how-to sets them."""
    _remote_workspace(workspace, "ScriptRunConfig")
    spec.check()
    references = {name: to_azureml_reference(workspace, ref) for name, ref in spec.data_references().items()}
    # the SDK cannot serialise reference objects in arguments: their str() is what Azure ML replaces on the node
    arguments = [str(a) if is_reference(a) else a for a in spec.arguments]
    with sdk_errors(f"building the ScriptRunConfig of {spec.script!r}"):
        from azureml.core import ScriptRunConfig as AzureMLScriptRunConfig
        from azureml.core.runconfig import MpiConfiguration

        options: dict[str, Any] = {}
        if spec.max_run_duration_seconds is not None:
            options["max_run_duration_seconds"] = spec.max_run_duration_seconds
        if spec.node_count * spec.process_count_per_node > 1:
            options["distributed_job_config"] = MpiConfiguration(
                process_count_per_node=spec.process_count_per_node, node_count=spec.node_count
            )
        built = AzureMLScriptRunConfig(
            source_directory=spec.source_directory,
            script=spec.script,
            arguments=arguments,
            compute_target=spec.compute_target,
            environment=spec.environment,
            **options,
        )
        built.run_config.data_references = {name: _config(ref) for name, ref in references.items()}
        built.run_config.environment_variables.update(spec.run_config.environment_variables)
        built.run_config.node_count = spec.node_count
        return built


# -- submitting ----------------------------------------------------------------------------------------------------


def submit(
    workspace: Workspace,
    experiment: str,
    config: Any,
    tags: Any,
    pipeline_parameters: Any,
) -> Any:
    """``azureml.core.Experiment(ws, experiment).submit(...)``; the SDK's ``Run``."""
    if isinstance(config, Plan | str | os.PathLike):
        raise TargetError(
            "a Batch AI job or pipeline goes to Azure ML as generated code: azbai.migrate(path, directory) "
            "writes pipeline.py; run it with --submit"
        )
    built = config.to_azureml(workspace) if isinstance(config, Estimator | ScriptRunConfig) else config
    if workspace.dry_run:
        raise TargetError(
            f"workspace {workspace.name!r} is offline: nothing is submitted (to_azureml(ws) gives the "
            f"{type(built).__name__} that would be)"
        )
    with sdk_errors(f"submitting to experiment {experiment!r}"):
        from azureml.core import Experiment as AzureMLExperiment

        options: dict[str, Any] = {"tags": dict(tags)} if tags else {}
        if pipeline_parameters:
            options["pipeline_parameters"] = dict(pipeline_parameters)
        return AzureMLExperiment(workspace.azureml, experiment).submit(built, **options)


def create_schedule(
    workspace: Workspace, name: str, pipeline: Any, experiment: str, arguments: dict[str, Any]
) -> Any:
    """``azureml.pipeline.core.Schedule.create`` with a published pipeline (or its id) and a blob datastore."""
    if isinstance(pipeline, Plan):
        raise TargetError(
            "an Azure ML schedule runs a published pipeline: publish the one azbai.migrate generates and pass it "
            "(or its id)"
        )
    pipeline_id = pipeline if isinstance(pipeline, str) else getattr(pipeline, "id", None)
    if not pipeline_id:
        raise TargetError(f"{pipeline!r} is not a published pipeline or its id")
    datastore = arguments.pop("datastore")
    if isinstance(datastore, Datastore):
        datastore = get_datastore(workspace, datastore.name)
    if datastore is not None and type(datastore).__name__ != "AzureBlobDatastore":
        raise StorageError(
            f"datastore {getattr(datastore, 'name', datastore)!r}: a schedule watches a blob container"
        )
    with sdk_errors(f"creating schedule {name!r}"):
        from azureml.pipeline.core import Schedule as AzureMLSchedule

        options = {k: v for k, v in arguments.items() if v is not None}
        return AzureMLSchedule.create(
            workspace.azureml, name=name, pipeline_id=pipeline_id, experiment_name=experiment,
            datastore=datastore, **options,
        )  # fmt: skip
