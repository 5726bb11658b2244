"""Azure ML SDK v1's datastore and estimator API, on the laptop (Azurite, directories, local processes) and on Azure ML.

The names and arguments of Azure ML's datastore how-to, so that its code runs locally by changing only how the
workspace is made (``azbai.Workspace()`` instead of ``Workspace.from_config()``)::

    ws = azbai.Workspace()                                     # or azbai.Workspace.from_config()
    data = azbai.Datastore.register_azure_blob_container(ws, "data", "data", "devstoreaccount1")
    data.upload("mnist", target_path="mnist")
    est = azbai.Estimator("src", "train.py", script_params={"--data": data.path("mnist").as_download()})
    run = azbai.Experiment(ws, "mnist").submit(est)
    run.wait_for_completion(show_output=True)

Nothing outside :mod:`azbai.aml.remote` imports ``azureml``; nothing but ``azbai/__init__.py`` and the CLI imports
this package.
"""

from __future__ import annotations

from azbai.aml.data_reference import DataReference, DataReferenceConfiguration
from azbai.aml.datastore import Datastore
from azbai.aml.estimator import Estimator, MpiConfiguration, RunConfiguration, ScriptRunConfig
from azbai.aml.experiment import Experiment
from azbai.aml.run import PipelineRun, Run
from azbai.aml.schedule import Schedule
from azbai.aml.workspace import Workspace

__all__ = [
    "DataReference",
    "DataReferenceConfiguration",
    "Datastore",
    "Estimator",
    "Experiment",
    "MpiConfiguration",
    "PipelineRun",
    "Run",
    "RunConfiguration",
    "Schedule",
    "ScriptRunConfig",
    "Workspace",
]
