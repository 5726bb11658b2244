"""Plan → ``migrate.ipynb``: the migration step by step, for Jupyter.

The notebook imports the generated ``pipeline.py`` beside it, so the notebook and the script cannot drift apart.
It is written as plain nbformat-4 JSON (no Jupyter package is needed to write it).
"""

from __future__ import annotations

import json
from typing import Any

from azbai.plan.model import Plan
from azbai.targets.azureml_v1.codegen import SDK_V1_END_OF_SUPPORT


def render_notebook(plan: Plan) -> str:
    """The notebook's JSON text."""
    cells = [
        _markdown(
            f"# Batch AI job `{plan.name}` on Azure Machine Learning\n",
            "\n",
            f"Migrated by azbai from `{plan.source.file}` ({plan.source.toolkit}). Run the cells in order; nothing is sent ",
            "to Azure until the *Submit* section, which needs a workspace `config.json`.\n",
            "\n",
            f"> Azure ML SDK v1 reached end of support on {SDK_V1_END_OF_SUPPORT}; it still works, but new work should ",
            "move to SDK v2 (`azure-ai-ml`). `MIGRATION.md` lists what changed.",
        ),
        _markdown(
            "## The plan\n", "The neutral description azbai made of the job (`plan.json`): no secrets in it."
        ),
        _code(
            "import json\n",
            "from pathlib import Path\n",
            "\n",
            "plan = json.loads(Path('plan.json').read_text())\n",
            "for store in plan['datastores']:\n",
            "    print(f\"datastore {store['name']:<22} {store['kind']:<15} {store['account_name']}/{store['container_name']}\")\n",
            "for ref in plan['data_references']:\n",
            "    print(f\"reference {ref['name']:<22} {ref['mode']:<9} {ref['datastore']}:{ref['path_on_datastore'] or '/'}\")\n",
            "print('compute', plan['compute']['vm_size'], plan['compute']['min_nodes'], '-', plan['compute']['max_nodes'], 'nodes')\n",
            "for note in plan['notes']:\n",
            "    print(f\"{note['severity']}: {note['field']}: {note['message']}\")",
        ),
        _markdown(
            "## Build the Azure ML objects offline\n",
            "`pipeline.py` holds the code; here it runs with azbai's offline stand-ins for the service, so every ",
            "datastore, data reference, the compute target, the ScriptRunConfig and the pipeline are built and can be ",
            "inspected without credentials.",
        ),
        _code(
            "import pipeline  # the generated pipeline.py beside this notebook\n",
            "from azbai.targets.azureml_v1 import offline\n",
            "\n",
            "objects = pipeline.build(offline.workspace(), 'mystorageaccount', None, dry_run=True, with_estimator=False)\n",
            "offline.finalize(objects['pipeline'])\n",
            "print(offline.summary_text(offline.summarize(objects)))",
        ),
        _markdown(
            "## Submit\n",
            "Set `SUBMIT = True`, your storage account, and `AZURE_BATCHAI_STORAGE_KEY` in the environment (the key is ",
            "never written to a file). Job secrets are copied from your environment into the workspace Key Vault.",
        ),
        _code(
            "SUBMIT = False\n",
            "STORAGE_ACCOUNT = 'mystorageaccount'\n",
            "\n",
            "if SUBMIT:\n",
            "    import os\n",
            "    from azureml.core import Experiment, Workspace\n",
            "\n",
            "    ws = Workspace.from_config()\n",
            "    objects = pipeline.build(ws, STORAGE_ACCOUNT, os.environ.get('AZURE_BATCHAI_STORAGE_KEY'), with_estimator=False)\n",
            "    pipeline.store_secrets(ws)\n",
            "    run = Experiment(ws, pipeline.EXPERIMENT).submit(objects['pipeline'])\n",
            "    run.wait_for_completion(show_output=True)",
        ),
    ]
    notebook: dict[str, Any] = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index}"
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def _markdown(*lines: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": list(lines)}


def _code(*lines: str) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": list(lines),
    }
