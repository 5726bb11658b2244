"""``azbai.Schedule``: a datastore-triggered pipeline schedule (Azure ML v1's), locally a watcher.

``Schedule.create(ws, name, pipeline, datastore=ds, path_on_datastore="incoming", polling_interval=5,
data_path_parameter_name="input_path")`` starts a pipeline run for each new or changed blob under the path, with the
blob's path as the data-path parameter. Locally ``pipeline`` is a pipeline plan (``azbai.load("pipeline.json")``)
and the schedule is a :class:`~azbai.local.trigger.TriggerWatcher`: :meth:`Schedule.poll` looks once,
:meth:`Schedule.watch` keeps looking every ``polling_interval`` minutes until :meth:`Schedule.disable`. With an
Azure ML workspace it is ``azureml.pipeline.core.Schedule.create`` with a published pipeline (or its id).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azbai import facade
from azbai.aml.datastore import Datastore
from azbai.aml.registry import BLOB
from azbai.errors import PipelineError
from azbai.local.runner import local_account
from azbai.local.trigger import Fired, TriggerWatcher
from azbai.plan.model import ParameterKind, Plan, StoreKind, Trigger

if TYPE_CHECKING:
    from azbai.aml.workspace import Workspace

log = logging.getLogger(__name__)
ACTIVE, DISABLED = "Active", "Disabled"


class Schedule:
    """A local datastore-triggered schedule of a pipeline plan."""

    def __init__(self, workspace: Workspace, name: str, plan: Plan, base_dir: Path) -> None:
        """Prefer :meth:`create`; ``plan`` must have its trigger."""
        self.workspace = workspace
        self.name = name
        self.plan = plan
        self.watcher = TriggerWatcher(workspace.local_workspace(), plan, base_dir)
        self.status = ACTIVE
        self._stop = threading.Event()

    @staticmethod
    def create(
        workspace: Workspace,
        name: str,
        pipeline: Plan | str | Path | Any,
        experiment_name: str | None = None,
        *,
        datastore: Datastore | Any = None,
        path_on_datastore: str | None = None,
        polling_interval: int | None = None,
        data_path_parameter_name: str | None = None,
        pipeline_parameters: Mapping[str, str] | None = None,
        description: str | None = None,
        base_dir: str | Path | None = None,
        **options: Any,
    ) -> Schedule | Any:
        """A schedule that runs ``pipeline`` for each new blob under ``path_on_datastore`` of ``datastore``.

        Locally ``pipeline`` is a pipeline plan or its file; what is not given comes from the file's trigger.
        ``options`` go to Azure ML's ``Schedule.create`` (and are refused locally).
        """
        if not workspace.is_local:
            from azbai.aml import remote

            return remote.create_schedule(
                workspace, name, pipeline, experiment_name or name,
                dict(datastore=datastore, path_on_datastore=path_on_datastore,
                     polling_interval=5 if polling_interval is None else polling_interval,
                     data_path_parameter_name=data_path_parameter_name, pipeline_parameters=pipeline_parameters,
                     description=description, **options),
            )  # fmt: skip
        if options:
            raise PipelineError(f"a local schedule takes no {', '.join(sorted(options))}")
        if isinstance(pipeline, str | Path):
            loaded = facade.read(pipeline)
            pipeline, base_dir = loaded.plan, base_dir or loaded.base_dir
        if not isinstance(pipeline, Plan):
            raise PipelineError(
                f"a local schedule runs a pipeline plan (azbai.load), not a {type(pipeline).__name__}"
            )
        plan = _scheduled(pipeline, datastore, path_on_datastore, polling_interval, data_path_parameter_name)
        if experiment_name:
            plan = dataclasses.replace(plan, experiment=experiment_name)
        if pipeline_parameters:
            plan = plan.with_parameters(**pipeline_parameters)
        return Schedule(workspace, name, plan, Path(base_dir or Path.cwd()))

    # -- Azure ML's attributes -------------------------------------------------------------------------------------

    @property
    def trigger(self) -> Trigger:
        """The plan's trigger: datastore, path, parameter, polling interval, pattern."""
        assert self.plan.trigger is not None
        return self.plan.trigger

    @property
    def datastore_name(self) -> str:
        """The datastore watched."""
        return self.trigger.datastore

    @property
    def path_on_datastore(self) -> str:
        """The path watched."""
        return self.trigger.path_on_datastore

    @property
    def polling_interval(self) -> int:
        """Minutes between polls."""
        return self.trigger.polling_interval_minutes

    @property
    def data_path_parameter_name(self) -> str:
        """The pipeline parameter that gets each new blob's path."""
        return self.trigger.data_path_parameter

    # -- running ---------------------------------------------------------------------------------------------------

    def poll(
        self, *, skip_existing: bool = False, on_fired: Callable[[Fired], None] | None = None
    ) -> list[Fired]:
        """Look once: a pipeline run for each new or changed blob (nothing while disabled)."""
        if self.status != ACTIVE:
            log.info("schedule %s is disabled: not polling", self.name)
            return []
        return self.watcher.poll(skip_existing=skip_existing, on_fired=on_fired)

    def watch(
        self,
        *,
        interval: float | None = None,
        max_polls: int | None = None,
        skip_existing: bool = False,
        on_fired: Callable[[Fired], None] | None = None,
    ) -> None:
        """Poll every ``interval`` seconds (default: ``polling_interval`` minutes) until :meth:`disable` or Ctrl-C."""
        if self.status != ACTIVE:
            log.info("schedule %s is disabled: not polling", self.name)
            return
        self.watcher.watch(
            interval=interval if interval is not None else self.polling_interval * 60,
            max_polls=max_polls,
            skip_existing=skip_existing,
            on_fired=on_fired,
            stop=self._stop,
        )

    def disable(self) -> None:
        """Stop firing (a running :meth:`watch` returns after its current poll)."""
        self.status = DISABLED
        self._stop.set()

    def enable(self) -> None:
        """Fire again."""
        self.status = ACTIVE
        self._stop.clear()

    def __repr__(self) -> str:
        t = self.trigger
        return (
            f"Schedule(name={self.name!r}, pipeline={self.plan.name!r}, status={self.status!r}, "
            f"datastore={t.datastore!r}, path_on_datastore={t.path_on_datastore!r}, "
            f"data_path_parameter_name={t.data_path_parameter!r}, polling_interval={t.polling_interval_minutes})"
        )


def _scheduled(
    plan: Plan,
    datastore: Datastore | None,
    path_on_datastore: str | None,
    polling_interval: int | None,
    parameter: str | None,
) -> Plan:
    """``plan`` with the trigger the arguments describe (what they leave out comes from the plan's own)."""
    base = plan.trigger
    if datastore is None and base is None:
        raise PipelineError(
            f"pipeline {plan.name!r} has no trigger: give datastore= and data_path_parameter_name="
        )
    datastores = plan.datastores
    store_name = base.datastore if base is not None else ""
    if datastore is not None:
        if not isinstance(datastore, Datastore):
            raise PipelineError(
                "a local schedule watches a datastore of azbai.Workspace() (ws.datastores[...])"
            )
        if datastore.datastore_type != BLOB:
            raise PipelineError(
                f"datastore {datastore.name!r} is a file share: a schedule watches a blob container (as Azure ML)"
            )
        same = [
            d.name
            for d in plan.datastores
            if d.kind is StoreKind.BLOB_CONTAINER
            and local_account(d) == datastore.account_name
            and ("workspaceblobstore" if d.workspace_default else d.container_name)
            == datastore.container_name
        ]
        if same:
            store_name = same[0]
        elif any(d.name == datastore.name for d in plan.datastores):
            raise PipelineError(
                f"pipeline {plan.name!r} already has a different datastore named {datastore.name!r}"
            )
        else:
            store_name = datastore.name
            datastores = (*plan.datastores, datastore.plan_datastore())
    data_paths = [p.name for p in plan.parameters if p.kind is ParameterKind.DATA_PATH]
    parameter = parameter or (base.data_path_parameter if base else None)
    if parameter not in data_paths:
        raise PipelineError(
            f"pipeline {plan.name!r} has no data-path parameter {parameter!r} for the new blobs' paths "
            f"(its data-path parameters: {', '.join(data_paths) or 'none'})"
        )
    assert parameter is not None
    fields: dict[str, Any] = {"datastore": store_name, "data_path_parameter": parameter}
    if path_on_datastore is not None:
        fields["path_on_datastore"] = path_on_datastore.strip("/")
    if polling_interval is not None:
        fields["polling_interval_minutes"] = int(polling_interval)
    if base is not None:
        trigger = dataclasses.replace(base, **fields)
    else:
        fields.setdefault("path_on_datastore", "")
        trigger = Trigger(**fields)
    # the new blob is read from the watched datastore, as Azure ML passes a DataPath on it
    parameters = tuple(
        dataclasses.replace(p, datastore=store_name) if p.name == parameter else p for p in plan.parameters
    )
    return dataclasses.replace(plan, datastores=datastores, parameters=parameters, trigger=trigger)
