"""Offline stand-ins for the Azure ML service, so SDK v1 objects build with no credentials and no network.

``python pipeline.py --dry-run`` and the tests use these: a :class:`~azureml.core.Workspace` with a fake token,
an ``AmlCompute`` deserialised from the ARM payload its provisioning configuration would send, and a pipeline
workflow provider that answers the few service calls ``Pipeline`` makes while building its graph. Every object they
help build is the SDK's own.

Two SDK internals are patched, only while :func:`activate` is in effect (``ServiceContext._fetch_endpoints`` and the
pipeline workflow provider); a submit in the same process after :func:`deactivate` talks to the real service.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from types import SimpleNamespace
from typing import Any

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "offline-rg"
WORKSPACE = "offline-ws"
LOCATION = "westeurope"
_WORKSPACE_ID = "11111111-1111-1111-1111-111111111111"

_saved: dict[str, Any] = {}
logger = logging.getLogger(__name__)


def activate() -> None:
    """Make service discovery answer offline (idempotent)."""
    from azureml._restclient.service_context import ServiceContext, _ServiceKeys

    if "fetch" not in _saved:
        _saved["fetch"] = ServiceContext._fetch_endpoints
        ServiceContext._fetch_endpoints = lambda self: {
            key: "https://offline.invalid" for key in _ServiceKeys.get_discovery_keys()
        }


def deactivate() -> None:
    """Undo :func:`activate`."""
    from azureml._restclient.service_context import ServiceContext

    if "fetch" in _saved:
        ServiceContext._fetch_endpoints = _saved.pop("fetch")


def workspace() -> Any:
    """A Workspace object that never contacts Azure."""
    from azureml.core import Workspace
    from azureml.core.authentication import ArmTokenAuthentication

    activate()
    return Workspace(
        SUBSCRIPTION,
        RESOURCE_GROUP,
        WORKSPACE,
        auth=ArmTokenAuthentication("offline", cloud="AzureCloud"),
        _location=LOCATION,
        _disable_service_check=True,
        _workspace_id=_WORKSPACE_ID,
    )


def compute_target(ws: Any, name: str, provisioning_config: Any) -> Any:
    """The AmlCompute ``provisioning_config`` would create, as if it existed (Estimator needs one for node_count > 1)."""
    from azureml.core.compute import AmlCompute

    payload = AmlCompute._build_create_payload(provisioning_config, LOCATION, SUBSCRIPTION)
    payload.update(
        name=name,
        id=(
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{WORKSPACE}/computes/{name}"
        ),
        tags=None,
    )
    payload["properties"].update(
        description=None,
        provisioningState="Succeeded",
        provisioningErrors=None,
        resourceId=None,
        isAttachedCompute=False,
        computeLocation=LOCATION,  # the workspace's region: no "different location" warning
    )
    payload["properties"]["properties"].setdefault("subnet", None)
    return AmlCompute.deserialize(ws, payload)


def default_datastore(ws: Any) -> Any:
    """The workspace's default blob datastore (``workspaceblobstore``), as an object."""
    from azureml.data.azure_storage_datastore import AzureBlobDatastore

    return AzureBlobDatastore(
        ws, "workspaceblobstore", "azureml-blobstore-offline", "offlineworkspacestore", account_key="offline"
    )


class _ServiceCaller:
    """Answers the pipeline service calls made while a graph is built; records the rest without doing them."""

    _service_endpoint = "https://offline.invalid"
    _TYPES = (
        "AnyFile", "AzureBlobReference", "AzureDataLakeReference", "AzureFilesReference", "AzureSqlDatabaseReference",
        "AzurePostgresDatabaseReference", "AzureDataLakeGen2Reference", "AzureMLDataset", "AzureMySqlDatabaseReference",
        "DBFSReference", "AnyDirectory",
    )  # fmt: skip

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_all_datatypes_async(self) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(
                id=t, name=t, description=t, is_directory=t == "AnyDirectory", parent_data_type_ids=[]
            )
            for t in self._TYPES
        ]

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append(name)

        return record


def pipeline_options(ws: Any) -> dict[str, Any]:
    """Keyword arguments that let ``Pipeline(ws, steps, **pipeline_options(ws))`` build offline."""
    from azureml.pipeline.core._aeva_provider import _AevaWorkflowProvider

    activate()
    return {
        "default_datastore": default_datastore(ws),
        "_workflow_provider": _AevaWorkflowProvider(_ServiceCaller(), None, ws),
    }


class _ScheduleRecorder:
    """Stands for the schedule service: records ``create_schedule`` and answers with a real ``Schedule`` object."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.calls: list[dict[str, Any]] = []

    def create_schedule(
        self, name: str, experiment_name: str, published_pipeline_id: str, **kwargs: Any
    ) -> Any:
        from azureml.pipeline.core import Schedule

        self.calls.append(
            {"name": name, "experiment_name": experiment_name, "pipeline_id": published_pipeline_id, **kwargs}
        )
        return Schedule(
            self.ws,
            id=f"offline-schedule-{len(self.calls)}",
            name=name,
            description=kwargs.get("description"),
            pipeline_id=published_pipeline_id,
            status="Active",
            recurrence=kwargs.get("recurrence"),
            datastore_name=kwargs.get("datastore_name"),
            polling_interval=kwargs.get("polling_interval"),
            data_path_parameter_name=kwargs.get("data_path_parameter_name"),
            continue_on_step_failure=kwargs.get("continue_on_step_failure"),
            path_on_datastore=kwargs.get("path_on_datastore"),
            _schedule_provider=self,
        )


def schedule_options(ws: Any) -> dict[str, Any]:
    """Keyword arguments that let ``Schedule.create(ws, …, **schedule_options(ws))`` build offline."""
    activate()
    return {"_workflow_provider": SimpleNamespace(schedule_provider=_ScheduleRecorder(ws))}


#: what a pipeline published offline is called
OFFLINE_PIPELINE_ID = "offline-published-pipeline"


def finalize(pipeline: Any) -> str:
    """Validate and finalise a pipeline graph offline; returns what the SDK printed while doing it."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        problems = pipeline.validate()
        pipeline.graph.finalize(dry_run=True)
    if problems:
        raise ValueError(f"the pipeline does not validate: {problems}")
    return captured.getvalue()


def step_summaries(pipeline: Any) -> list[dict[str, Any]]:
    """What each step of a finalised pipeline will run: name, arguments, node count, distribution, data, image."""
    rows = []
    for node in pipeline.graph.module_nodes:
        runconfig = json.loads(node._runconfig)
        environment = runconfig.get("environment") or {}
        docker = environment.get("docker") or {}
        rows.append(
            {
                "name": node.name,
                "arguments": [_argument_text(a) for a in node._module_builder._arguments],
                "node_count": runconfig.get("nodeCount"),
                "communicator": runconfig.get("communicator"),
                "mpi": runconfig.get("mpi"),
                "pytorch": runconfig.get("pyTorch"),
                "tensorflow": runconfig.get("tensorflow"),
                "image": docker.get("baseImage"),
                "inputs": {
                    port.name: {"mode": port._bind_mode, "path_on_compute": port._path_on_compute}
                    for port in node.inputs
                },
                "outputs": sorted(port.name for port in node.outputs if not port.name.startswith("_")),
            }
        )
    return rows


def _argument_text(argument: Any) -> str:
    """A pipeline argument as text: plain strings as they are, step inputs as ``<input:NAME>``."""
    text = getattr(argument, "text", None)
    if isinstance(text, str):
        return text
    name = getattr(argument, "name", None)
    return f"<input:{name}>" if isinstance(name, str) else str(argument)


def summarize(objects: dict[str, Any]) -> dict[str, Any]:
    """A JSON-ready description of the objects ``pipeline.py``'s ``build`` returns (the pipeline must be finalised)."""
    computes = objects.get("computes") or {objects["compute"].name: objects["compute"]}
    summary: dict[str, Any] = {
        "datastores": [
            {
                "name": store.name,
                "type": type(store).__name__,
                "account_name": getattr(store, "account_name", None),
                "container_name": getattr(store, "container_name", None),
            }
            for store in objects["datastores"].values()
        ],
        "computes": [_compute(c) for c in computes.values()],
        "pipeline": step_summaries(objects["pipeline"]),
        "step_segment": objects["step_segment"],
    }
    if "compute" in objects:
        summary["compute"] = _compute(objects["compute"])
    if "environment" in objects:
        env = objects["environment"]
        summary["environment"] = {
            "name": env.name,
            "image": env.docker.base_image,
            "pip_packages": sorted(env.python.conda_dependencies.pip_packages),
            "registry": env.docker.base_image_registry.address,
        }
    if "run_references" in objects:
        summary["run_references"] = {name: _reference(ref) for name, ref in objects["run_references"].items()}
        summary["run_segment"] = objects["run_segment"]
    if "script_run_config" in objects:
        src = objects["script_run_config"]
        rc = src.run_config
        summary["script_run_config"] = {
            "script": src.script,
            "arguments": [str(a) for a in src.arguments],
            "node_count": rc.node_count,
            "communicator": rc.communicator,
            "process_count_per_node": rc.mpi.process_count_per_node,
            "shm_size": rc.docker.shm_size if rc.docker else None,
            "data_references": {name: _reference_config(cfg) for name, cfg in rc.data_references.items()},
        }
    estimator = objects.get("estimator")
    if estimator is not None:
        erc = estimator.run_config
        summary["estimator"] = {
            "type": type(estimator).__name__,
            "entry_script": erc.script,
            "node_count": erc.node_count,
            "communicator": erc.communicator,
            "image": erc.environment.docker.base_image,
            "data_references": {name: _reference_config(cfg) for name, cfg in erc.data_references.items()},
        }
    schedule = objects.get("schedule")
    if schedule is not None:
        summary["schedule"] = {
            "name": schedule.name,
            "pipeline_id": schedule.pipeline_id,
            "datastore": schedule.datastore_name,
            "path_on_datastore": schedule.path_on_datastore,
            "polling_interval": schedule.polling_interval,
            "data_path_parameter_name": schedule.data_path_parameter_name,
        }
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    """The --dry-run summary for a person to read."""
    lines = ["Built offline with the Azure ML SDK v1 (nothing was sent anywhere):", "", "Datastores:"]
    for store in summary["datastores"]:
        lines.append(
            f"  {store['name']:<24} {store['type']:<20} {store['account_name']}/{store['container_name']}"
        )
    if "run_references" in summary:
        lines += ["", "Data references (single run):"]
        for name, ref in summary["run_references"].items():
            where = f"{ref['datastore']}:{ref['path_on_datastore'] or '/'}"
            extra = f" -> {ref['path_on_compute']}" if ref["path_on_compute"] else ""
            lines.append(f"  {name:<24} {ref['mode']:<9} {where}{extra}")
    lines.append("")
    for c in summary["computes"]:
        lines.append(
            f"Compute: {c['type']} {c['name']!r}: {c['vm_size']}, {c['min_nodes']}-{c['max_nodes']} nodes, {c['vm_priority']}"
        )
    if "environment" in summary:
        e = summary["environment"]
        lines.append(f"Environment: {e['image']} + pip {', '.join(e['pip_packages'])}")
    if "script_run_config" in summary:
        s = summary["script_run_config"]
        lines.append(
            f"ScriptRunConfig: {s['script']} on {s['node_count']} node(s), communicator {s['communicator']}, "
            f"shm {s['shm_size']}"
        )
    if "estimator" in summary:
        est = summary["estimator"]
        lines.append(
            f"Estimator: {est['entry_script']} on {est['node_count']} node(s), communicator {est['communicator']}"
        )
    for step in summary["pipeline"]:
        lines += [
            "",
            f"Pipeline step {step['name']!r}: {step['node_count']} node(s), communicator {step['communicator']}",
        ]
        lines.append(f"  arguments: {' '.join(step['arguments'])}")
        for name, port in step["inputs"].items():
            lines.append(f"  input  {name:<22} {port['mode']}")
        for name in step["outputs"]:
            lines.append(f"  output {name:<22}")
    if "schedule" in summary:
        sc = summary["schedule"]
        lines += [
            "",
            f"Schedule {sc['name']!r}: every {sc['polling_interval']} min, new blobs under "
            f"{sc['datastore']}:{sc['path_on_datastore']} → parameter {sc['data_path_parameter_name']}",
        ]
    if "run_segment" in summary:
        lines += ["", f"Output segment of a single run: {summary['run_segment']}"]
    return "\n".join(lines)


def _compute(compute: Any) -> dict[str, Any]:
    return {
        "name": compute.name,
        "type": type(compute).__name__,
        "vm_size": compute.vm_size,
        "vm_priority": compute.vm_priority,
        "min_nodes": compute.scale_settings.minimum_node_count,
        "max_nodes": compute.scale_settings.maximum_node_count,
    }


def _reference(ref: Any) -> dict[str, Any]:
    return {
        "mode": ref.mode,
        "datastore": ref.datastore.name,
        "path_on_datastore": ref.path_on_datastore,
        "path_on_compute": ref.path_on_compute,
        "overwrite": ref.overwrite,
    }


def _reference_config(cfg: Any) -> dict[str, Any]:
    return {
        "mode": cfg.mode,
        "datastore": cfg.data_store_name,
        "path_on_datastore": cfg.path_on_data_store,
        "path_on_compute": cfg.path_on_compute,
    }
