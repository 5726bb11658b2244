"""``azbai.Experiment``: submit an Estimator, a ScriptRunConfig or a plan, locally or to Azure ML.

Locally an Estimator or a ScriptRunConfig becomes a single-job plan (:mod:`azbai.aml.local_plan`) run by the local
engine in the background, exactly as ``azbai job create`` runs a Batch AI job; a Batch AI job's plan runs that way
as it is; a pipeline plan runs its steps in a thread of this process and gives a :class:`~azbai.aml.run.PipelineRun`.
With an Azure ML workspace the config becomes the SDK's object and ``azureml.core.Experiment.submit`` returns the
SDK's ``Run``.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azbai import facade
from azbai.aml import local_plan
from azbai.aml.estimator import Estimator, ScriptRunConfig
from azbai.aml.run import PipelineRun, Run, write_definition
from azbai.errors import PlanError
from azbai.local import service
from azbai.local.jobs import JobBook, check_name
from azbai.local.pipelines import PipelineRunner
from azbai.plan.model import Plan

if TYPE_CHECKING:
    from azbai.aml.workspace import Workspace


class Experiment:
    """A named group of runs in a workspace (Azure ML's ``Experiment``)."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = check_name(name, "experiment name") if workspace.is_local else name

    def submit(
        self,
        config: Estimator | ScriptRunConfig | Plan | str | Path | Any,
        tags: Mapping[str, str] | None = None,
        *,
        pipeline_parameters: Mapping[str, str] | None = None,
        base_dir: str | Path | None = None,
        environment_variables: Mapping[str, str] | None = None,
    ) -> Run | PipelineRun | Any:
        """Start a run of ``config`` and return it at once (``wait_for_completion`` waits).

        ``config`` is an :class:`Estimator`, a :class:`ScriptRunConfig`, a :class:`~azbai.plan.model.Plan` (from
        ``azbai.load``) or the path of a job.json or pipeline file. ``pipeline_parameters`` are a pipeline's
        parameter values; ``base_dir`` is where a pipeline plan's relative paths start (default: here).
        ``environment_variables`` are added to a Batch AI job's environment (as ``azbai job create --env``).
        """
        if not self.workspace.is_local:
            from azbai.aml import remote

            return remote.submit(self.workspace, self.name, config, tags, pipeline_parameters)
        if isinstance(config, str | Path):
            loaded = facade.read(config)
            config, base_dir = loaded.plan, loaded.base_dir
        if isinstance(config, Estimator | ScriptRunConfig):
            if pipeline_parameters:
                raise PlanError("pipeline_parameters are for pipelines; an Estimator takes script_params")
            if environment_variables:
                raise PlanError("give an Estimator or a ScriptRunConfig its environment_variables itself")
            return self._submit_script(config)
        if isinstance(config, Plan):
            if len(config.steps) == 1 and config.job_steps and not config.parameters:
                if pipeline_parameters:
                    raise PlanError(f"{config.name!r} is a single job: it has no pipeline parameters")
                return self._submit_job(config, dict(environment_variables or {}))
            if environment_variables:
                raise PlanError(
                    "a pipeline's steps take their variables from their jobs' environmentVariables"
                )
            return self._submit_pipeline(
                config, dict(pipeline_parameters or {}), Path(base_dir or Path.cwd())
            )
        raise PlanError(
            f"cannot submit a {type(config).__name__}: give an Estimator, a ScriptRunConfig or a plan (azbai.load)"
        )

    def _new_run_id(self) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
        return f"{self.name[:40]}_{stamp}_{uuid.uuid4().hex[:8]}"

    def _submit_script(self, config: Estimator | ScriptRunConfig) -> Run:
        local = self.workspace.local_workspace().ensure()
        run_id = self._new_run_id()
        directory = JobBook(local).directory(self.name, run_id)
        config.check()
        references = local_plan.local_references(config, self.workspace)
        local_plan.check_inputs(references)
        try:
            snapshot = local_plan.snapshot(config, directory / "snapshot", local.root)
            plan = local_plan.job_plan(
                config, self.workspace, run_id=run_id, experiment=self.name, snapshot_dir=snapshot
            )
            target = config.compute_target
            write_definition(
                directory,
                {
                    "target": str(getattr(target, "name", target) or "local"),
                    "runDefinition": local_plan.describe(config, references),
                },
            )
            service.create_job(local, plan, name=run_id, experiment=self.name)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return Run(self.workspace, self.name, run_id)

    def _submit_job(self, plan: Plan, environment: dict[str, str]) -> Run:
        local = self.workspace.local_workspace().ensure()
        run_id = self._new_run_id()
        directory = JobBook(local).directory(self.name, run_id)
        job = plan.job_steps[0].job
        definition = {
            "batchAiJob": plan.source.file,
            "toolkit": job.launch.toolkit,
            "nodeCount": job.node_count,
            "dataReferences": {
                ref.name: {
                    "dataStoreName": ref.datastore,
                    "pathOnDataStore": ref.path_on_datastore,
                    "mode": ref.mode.value,
                    "pathOnCompute": ref.path_on_compute,
                    "overwrite": ref.overwrite,
                }
                for ref in plan.data_references
            },
        }
        try:
            write_definition(directory, {"target": plan.compute.name, "runDefinition": definition})
            service.create_job(
                local,
                plan,
                name=run_id,
                experiment=self.name,
                secrets=facade.secret_values(plan),
                env=environment,
            )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return Run(self.workspace, self.name, run_id)

    def _submit_pipeline(self, plan: Plan, parameters: dict[str, str], base_dir: Path) -> PipelineRun:
        local = self.workspace.local_workspace()
        plan.with_parameters(**parameters)  # unknown parameters fail here, not in the run's thread
        plan = dataclasses.replace(plan, experiment=self.name)
        runner = PipelineRunner(local, plan, base_dir)
        run_id = f"run-{self._new_run_id()[len(self.name[:40]) + 1 :]}"
        run = PipelineRun(self.workspace, self.name, plan.name, run_id)

        def body() -> None:
            runner.run(parameters, run_id=run_id)

        return run.start(body)

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"
