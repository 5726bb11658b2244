"""azbai: carry Azure Batch AI jobs over to Azure Machine Learning, and run them on a laptop too.

``import azbai`` is the whole user API (``docs/api.md``). It stays light: azureml, azure.ai.ml and azure.storage
are imported only when a call needs them.

    plan = azbai.load("job.json", storage_account="mystorage")     # a Batch AI job or an azbai pipeline file
    report = azbai.validate("job.json")                              # .ok, .errors, .warnings, by JSON path
    azbai.migrate("job.json", "migrated/job")                        # Azure ML code, a notebook, MIGRATION.md

    ws = azbai.Workspace()                                           # local: Azurite and directories
    ds = ws.get_default_datastore()                                  # Azure ML's datastore and estimator calls
    run = azbai.Experiment(ws, "mnist").submit(plan)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from azbai.errors import (
    AzbaiError,
    AzError,
    AzUsageError,
    JobError,
    JobFailed,
    MlError,
    MlJobFailed,
    PipelineError,
    PlanError,
    SpecError,
    StorageError,
    TargetError,
    TransferError,
)
from azbai.version import __version__

#: public name → the module that defines it, imported on first use
_LAZY = {
    "load": "azbai.facade",
    "validate": "azbai.facade",
    "migrate": "azbai.facade",
    "azureml_objects": "azbai.facade",
    "ValidationReport": "azbai.facade",
    "MigrationResult": "azbai.facade",
    "SourceOptions": "azbai.facade",
    "Plan": "azbai.plan.model",
    "Diagnostic": "azbai.source.diagnostics",
    "Workspace": "azbai.aml.workspace",
    "Datastore": "azbai.aml.datastore",
    "DataReference": "azbai.aml.data_reference",
    "DataReferenceConfiguration": "azbai.aml.data_reference",
    "Estimator": "azbai.aml.estimator",
    "ScriptRunConfig": "azbai.aml.estimator",
    "MpiConfiguration": "azbai.aml.estimator",
    "RunConfiguration": "azbai.aml.estimator",
    "Experiment": "azbai.aml.experiment",
    "Run": "azbai.aml.run",
    "PipelineRun": "azbai.aml.run",
    "Schedule": "azbai.aml.schedule",
}

__all__ = [
    "AzError",
    "AzUsageError",
    "AzbaiError",
    "DataReference",
    "DataReferenceConfiguration",
    "Datastore",
    "Diagnostic",
    "Estimator",
    "Experiment",
    "JobError",
    "JobFailed",
    "MigrationResult",
    "MlError",
    "MlJobFailed",
    "MpiConfiguration",
    "PipelineError",
    "PipelineRun",
    "Plan",
    "PlanError",
    "Run",
    "RunConfiguration",
    "Schedule",
    "ScriptRunConfig",
    "SourceOptions",
    "SpecError",
    "StorageError",
    "TargetError",
    "TransferError",
    "ValidationReport",
    "Workspace",
    "__version__",
    "azureml_objects",
    "load",
    "migrate",
    "validate",
]

if TYPE_CHECKING:
    from azbai.aml.data_reference import DataReference, DataReferenceConfiguration
    from azbai.aml.datastore import Datastore
    from azbai.aml.estimator import Estimator, MpiConfiguration, RunConfiguration, ScriptRunConfig
    from azbai.aml.experiment import Experiment
    from azbai.aml.run import PipelineRun, Run
    from azbai.aml.schedule import Schedule
    from azbai.aml.workspace import Workspace
    from azbai.facade import (
        MigrationResult,
        SourceOptions,
        ValidationReport,
        azureml_objects,
        load,
        migrate,
        validate,
    )
    from azbai.plan.model import Plan
    from azbai.source.diagnostics import Diagnostic


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'azbai' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
