"""The local Azure ML engine: run CLI v2 job files (command and pipeline) on the embedded default.

``azbai ml job create -f v2/job.yml`` reads the file with azure-ai-ml's own loaders, resolves
``azureml://datastores/…`` against datastores created locally from ``v2/datastores/*.yml`` (Azurite containers,
share directories), and starts ``instance_count`` × the distribution's processes with the environment Azure ML gives
each one. Modules: :mod:`.loaders` (azure-ai-ml, lazily), :mod:`.registry` (datastores, computes), :mod:`.data`
(inputs and outputs by mode), :mod:`.processes` (ranks and their environment), :mod:`.command` (one job or node),
:mod:`.pipeline` (nodes in order, wired), :mod:`.runs` (run records), :mod:`.service` (the CLI's verbs),
:mod:`.v1_local` (``pipeline.py --local``).
"""

from __future__ import annotations

from azbai.errors import MlError, MlJobFailed

__all__ = ["MlError", "MlJobFailed"]
