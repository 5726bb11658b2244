"""Batch AI → plan: the one place that decides what each Batch AI field becomes.

It reads the typed source model (``azbai.source``) and builds the neutral plan (``azbai.plan``); it reads no file
itself (the façade hands it what it loaded).

    job.py        a job.json (and cluster.json) → a single-step plan
    pipeline.py   an azbai pipeline file and its step jobs → a multi-step plan
    storage.py    mount volumes, shares, containers → datastores, data references, volumes
    toolkits.py   toolkit settings → how the processes start
    compute.py    VM sizes and framework images, with their current replacements
"""

from azbai.convert.job import DEFAULT_EXPERIMENT, PlanOptions, build_plan
from azbai.convert.pipeline import build_pipeline_plan
from azbai.convert.storage import ExtraMount

__all__ = ["DEFAULT_EXPERIMENT", "ExtraMount", "PlanOptions", "build_pipeline_plan", "build_plan"]
