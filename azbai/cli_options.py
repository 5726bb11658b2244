"""Options several ``azbai`` commands share, spelled as the Batch AI CLI spelled them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

_JOB_SOURCE_OPTIONS = (
    click.option(
        "--cluster", "cluster_file", type=click.Path(dir_okay=False), help="The cluster.json the job ran on."
    ),
    click.option(
        "--merge",
        "merge_files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A fragment to merge in.",
    ),
    click.option(
        "--mount",
        "mounts",
        multiple=True,
        help="A cluster mount the job uses: NAME=afs://ACCOUNT/SHARE or NAME=blob://ACCOUNT/CONTAINER.",
    ),
    click.option(
        "--storage-account-name",
        help="Replaces <AZURE_BATCHAI_STORAGE_ACCOUNT> (else $AZURE_BATCHAI_STORAGE_ACCOUNT).",
    ),
    click.option(
        "--storage-account-key",
        help="Replaces <AZURE_BATCHAI_STORAGE_KEY> (else $AZURE_BATCHAI_STORAGE_KEY). Never written anywhere.",
    ),
)


def job_source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--cluster``, ``--merge``, ``--mount`` and the storage account flags: what reading a job.json can take."""
    for option in reversed(_JOB_SOURCE_OPTIONS):
        func = option(func)
    return func
