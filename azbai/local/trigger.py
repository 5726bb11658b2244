"""Watch a blob container path and start a pipeline run for each new blob: the local twin of a datastore-triggered
Azure ML ``Schedule`` (and of the Batch AI architecture's Logic App polling for ``trigger*.txt``).

Each poll lists the blobs under the trigger's path; a blob whose name matches the pattern and that is new or changed
since it was last seen (its MD5 differs) starts one run, with the blob's path as the data-path parameter
(``use: path``) or with the path written inside it (``use: content``, a Batch AI trigger file). What a trigger names is
untrusted input: it must be a plain relative datastore path (no ``..``, no shell syntax) or it is rejected and
reported, and it only ever travels as a parameter value, never through a shell.

What was seen is kept in ``<workspace>/pipelines/<pipeline>/trigger.json``, so a restarted watcher does not run a
blob twice. A poll runs what is new since the last one; with ``skip_existing`` it only marks what is there now as
seen, whether or not an earlier watcher left a memory (Azure ML fires only for blobs added after the schedule was
created).
"""

from __future__ import annotations

import fnmatch
import logging
import posixpath
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from azbai.errors import AzbaiError, PipelineError, StorageError
from azbai.local.parallel import WarmPool
from azbai.local.pipelines import PipelineRun, PipelineRunner, check_datastore_path
from azbai.local.records import load_record, save_record
from azbai.local.runner import open_datastore
from azbai.local.warm import CommandPool
from azbai.local.workspace import Workspace
from azbai.plan.model import Plan

log = logging.getLogger(__name__)
MAX_TRIGGER_FILE = 4096
#: the format of the trigger's memory of the blobs it has seen
TRIGGER_FORMAT = 1


@dataclass(frozen=True)
class Fired:
    """One blob the watcher acted on: the run it started, or why it was rejected or failed."""

    blob: str
    parameter: str | None
    run: PipelineRun | None = None
    error: str | None = None


class TriggerWatcher:
    """Polls the trigger's path and runs the pipeline for each new blob.

    A watcher runs its pipeline again and again, so its parallel steps' fork servers come from a
    :class:`~azbai.local.parallel.WarmPool`: the first run imports what their entry scripts import (torch), the
    later ones fork from there. :meth:`close` (or leaving a ``with`` block) ends the pool's processes; so does
    the watcher's garbage collection, or the end of this process.
    """

    def __init__(self, workspace: Workspace, plan: Plan, base_dir: Path, *, reuse: bool = True) -> None:
        if plan.trigger is None:
            raise PipelineError(f"pipeline {plan.name!r} has no trigger")
        self.workspace = workspace
        self.plan = plan
        self.trigger = plan.trigger
        self.pool = WarmPool()
        self.commands = CommandPool()
        self.runner = PipelineRunner(
            workspace, plan, base_dir, reuse=reuse, warm_pool=self.pool, commands=self.commands
        )
        self.state_file = workspace.pipelines_dir / plan.name / "trigger.json"

    def close(self) -> None:
        """End the processes kept warm for later runs (a later poll starts them again)."""
        self.pool.close()
        self.commands.close()

    def __enter__(self) -> TriggerWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def poll(
        self, *, skip_existing: bool = False, on_fired: Callable[[Fired], None] | None = None
    ) -> list[Fired]:
        """One poll: act on every new or changed blob; returns what happened."""
        store = open_datastore(self.workspace, self.plan.datastore(self.trigger.datastore))
        prefix = self.trigger.path_on_datastore.strip("/")
        try:
            entries = store.list(prefix + "/" if prefix else "") if store.root_exists() else []
        except StorageError as exc:
            raise PipelineError(f"cannot list the trigger path {store.url_for(prefix)}: {exc}") from exc
        seen = self._load()
        first = not self.state_file.exists()
        fired: list[Fired] = []
        for entry in entries:
            name = posixpath.basename(entry.path)
            if not fnmatch.fnmatchcase(name, self.trigger.pattern) or seen.get(entry.path) == entry.md5:
                continue
            seen[entry.path] = entry.md5
            self._save(seen)
            if skip_existing:
                continue
            result = self._fire(store, entry.path)
            fired.append(result)
            if on_fired is not None:
                on_fired(result)
        if first:
            self._save(seen)
        return fired

    def watch(
        self,
        *,
        interval: float | None = None,
        max_polls: int | None = None,
        skip_existing: bool = False,
        on_fired: Callable[[Fired], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Poll every ``interval`` seconds (default: the trigger's polling interval) until interrupted, or until
        ``stop`` is set (a poll under way finishes first)."""
        period = interval if interval is not None else self.trigger.polling_interval_minutes * 60
        stop = stop or threading.Event()
        polls = 0
        while not stop.is_set() and (max_polls is None or polls < max_polls):
            self.poll(skip_existing=skip_existing and polls == 0, on_fired=on_fired)
            polls += 1
            if (max_polls is None or polls < max_polls) and stop.wait(period):
                break

    def _fire(self, store: object, blob: str) -> Fired:
        try:
            value = self._parameter_value(store, blob)
        except AzbaiError as exc:
            log.info("trigger %s rejected: %s", blob, exc)  # reported once, by the caller, through Fired
            return Fired(blob, None, error=str(exc))
        try:
            run = self.runner.run({self.trigger.data_path_parameter: value})
        except AzbaiError as exc:
            return Fired(blob, value, error=str(exc))
        return Fired(blob, value, run)

    def _parameter_value(self, store: object, blob: str) -> str:
        if self.trigger.use == "path":
            return check_datastore_path(blob, what=f"trigger blob {blob!r}")
        data = store.read_bytes(blob)  # type: ignore[attr-defined]
        if len(data) > MAX_TRIGGER_FILE:
            raise PipelineError(f"trigger file {blob!r} is larger than {MAX_TRIGGER_FILE} bytes")
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise PipelineError(f"trigger file {blob!r} is not UTF-8 text") from exc
        if "\n" in text or "\r" in text:
            raise PipelineError(f"trigger file {blob!r} must hold one path on one line")
        return check_datastore_path(text, what=f"trigger file {blob!r}")

    def _load(self) -> dict[str, str | None]:
        if not self.state_file.exists():
            return {}
        return load_record(
            self.state_file,
            TRIGGER_FORMAT,
            "trigger memory",
            PipelineError,
            lambda data: dict(data["seen"]),
            hint="remove it to let the trigger fire again for every blob",
        )

    def _save(self, seen: dict[str, str | None]) -> None:
        save_record(self.state_file, {"seen": dict(sorted(seen.items()))}, TRIGGER_FORMAT)
