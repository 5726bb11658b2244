"""The Azure ML SDK v2 / CLI v2 target: the plan as ``az ml`` YAML files and azure-ai-ml entities.

Two entry points:

- :func:`render_files` (``Plan`` → ``{relative path: text or bytes}``): ``v2/job.yml`` or ``v2/pipeline.yml`` with
  ``v2/components/``, ``v2/datastores/``, ``v2/computes/``, ``v2/schedule.yml`` and ``v2/submit.py``, plus the
  snapshot folders their ``code:`` paths name. Pure: no I/O but reading the launcher and a parallel step's source,
  and no azure-ai-ml import, so ``azbai migrate`` stays fast.
- :func:`build_entities` (a written folder → azure-ai-ml entities): imports that folder's ``submit.py``, the code
  ``python v2/submit.py --dry-run`` runs, loads every file with azure-ai-ml's loaders offline and validates it.

:func:`plan_entities` does both for a plan (written to a temporary folder), for notebooks and tests.

azure-ai-ml (the ``azureml-v2`` extra) is imported only inside :func:`build_entities` and the generated code.
"""

from __future__ import annotations

from azbai.targets.azureml_v2.entities import build_entities, plan_entities
from azbai.targets.azureml_v2.files import render_files

__all__ = ["build_entities", "plan_entities", "render_files"]
