"""Run a v2 pipeline job: its nodes in dependency order, wired as Azure ML wires them.

A node's input bound to ``${{parent.inputs.X}}`` gets the pipeline input (data or literal); one bound to
``${{parent.jobs.S.outputs.Y}}`` gets the URI node S's output ``Y`` was written to (its path, else the workspace
default ``azureml://datastores/workspaceblobstore/paths/azureml/<S's run>/<Y>/``), read with the consuming
component's input mode. Each node is a child run (``azbai ml job show -n <child>``), run by the pipeline's
runner, with its own stage-out plan: when that runner dies, the next look at the pipeline (or at the node) finishes
each started node's stage-out (:func:`azbai.ml.service.recover_run`). A failed node stops the pipeline: nodes that
depend on it are not started, and the message names the failed node and those left out.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Any

from azbai.errors import AzbaiError, MlError
from azbai.ml.command import DataInput, Engine, NodeSpec, command_spec, data_of, parallel_spec
from azbai.ml.registry import DEFAULT_DATASTORE
from azbai.ml.runs import CANCELED, COMPLETED, FAILED, NOT_STARTED, RUNNING, RunBook, RunRecord, new_name, now

log = logging.getLogger(__name__)

_PARENT_INPUT = re.compile(r"^\$\{\{\s*parent\.inputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
_PARENT_OUTPUT = re.compile(
    r"^\$\{\{\s*parent\.jobs\.([A-Za-z_][A-Za-z0-9_-]*)\.outputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$"
)

#: called with (node name, status) as a run progresses
Progress = Callable[[str, str], None]


def dependencies(pipeline: Any) -> dict[str, set[str]]:
    """Each node's upstream nodes (from its ``${{parent.jobs.*}}`` bindings)."""
    deps: dict[str, set[str]] = {}
    for name, node in pipeline.jobs.items():
        deps[name] = set()
        for value in node.inputs.values():
            match = _PARENT_OUTPUT.match(str(value._data)) if isinstance(value._data, str) else None
            if match:
                if match.group(1) not in pipeline.jobs:
                    raise MlError(
                        f"jobs.{name}: binds to ${{{{parent.jobs.{match.group(1)}}}}}: no such node"
                    )
                deps[name].add(match.group(1))
    return deps


def order(pipeline: Any) -> list[str]:
    """The nodes in dependency order (file order among equals); a cycle is an error."""
    deps = dependencies(pipeline)
    done: list[str] = []
    while len(done) < len(deps):
        ready = [n for n in deps if n not in done and deps[n] <= set(done)]
        if not ready:
            raise MlError(
                f"the pipeline's nodes depend on each other in a cycle: {sorted(set(deps) - set(done))}"
            )
        done.append(ready[0])
    return done


class PipelineRun:
    """One run of a ``PipelineJob``."""

    def __init__(self, engine: Engine, book: RunBook, pipeline: Any, record: RunRecord) -> None:
        self.engine = engine
        self.book = book
        self.pipeline = pipeline
        self.record = record
        self.outputs: dict[tuple[str, str], str] = {}

    def specs(self) -> dict[str, NodeSpec]:
        """Every node's spec (with unresolved upstream bindings), to check computes before anything runs."""
        return {name: self._spec(name, wired=False) for name in order(self.pipeline)}

    def run(self, progress: Progress | None = None) -> int:
        """Run every node; returns 0, or the failed node's exit code."""
        report = progress or (lambda node, status: None)
        record = self.record
        record.status, record.start_time = RUNNING, now()
        record.set_runner(os.getpid())
        nodes = order(self.pipeline)
        default = self.pipeline.settings.default_compute if self.pipeline.settings else None
        for spec in self.specs().values():
            self.engine.check_compute(spec, default)
            self.engine.check_data(spec)
        record.save()
        code = 0
        failed: str | None = None
        try:
            for position, name in enumerate(nodes):
                spec = self._spec(name, wired=True)
                child = self.book.create(
                    new_name(), type=spec.type, display_name=name, experiment=record.experiment,
                    parent=record.name, compute=str(spec.compute or default or ""),
                )  # fmt: skip
                record.children[name] = child.name
                record.save()
                report(name, RUNNING)
                code = self.engine.execute(spec, child)
                child = RunRecord.load(child.path)
                report(name, child.status)
                for key, value in child.outputs.items():
                    self.outputs[(name, key)] = value["uri"]
                if child.status != COMPLETED:
                    failed = name
                    left = nodes[position + 1 :]
                    record.message = (
                        f"node {name!r} {child.status.lower()} (exit code {child.exit_code})"
                        + (f": {child.message}" if child.message else "")
                        + f"; logs: azbai ml job stream -n {child.name}"
                        + (f"; not started: {', '.join(left)}" if left else "")
                    )
                    code = code or 1
                    break
        except AzbaiError as exc:
            record.message = str(exc)
            code = 1
        finally:
            record.end_time, record.exit_code = now(), code
            if self.engine._canceled.is_set():
                record.status = CANCELED
            else:
                record.status = COMPLETED if code == 0 and failed is None and not record.message else FAILED
            record.save()
        return code

    def _spec(self, name: str, *, wired: bool) -> NodeSpec:
        node = self.pipeline.jobs[name]
        component = node.component
        declared = getattr(component, "inputs", {}) or {}
        inputs: dict[str, Any] = {}
        for key, value in node.inputs.items():
            data = value._data
            text = data if isinstance(data, str) else None
            parent = _PARENT_INPUT.match(text) if text else None
            upstream = _PARENT_OUTPUT.match(text) if text else None
            spec_in = declared.get(key)
            if parent:
                if parent.group(1) not in self.pipeline.inputs:
                    raise MlError(f"jobs.{name}.inputs.{key}: the pipeline has no input {parent.group(1)!r}")
                source = self.pipeline.inputs[parent.group(1)]._data
                declared_mode = getattr(spec_in, "mode", None)
                value = data_of(source, declared_mode, getattr(spec_in, "type", None))
                if isinstance(value, DataInput) and declared_mode:
                    # the component's declared mode is the one the node reads with
                    value = DataInput(value.type, value.uri, declared_mode)
                inputs[key] = value
            elif upstream:
                step, output = upstream.group(1), upstream.group(2)
                uri = (
                    self.outputs.get((step, output))
                    if wired
                    else f"azureml://datastores/{DEFAULT_DATASTORE}/paths/pending/"
                )
                if uri is None:
                    raise MlError(f"jobs.{name}.inputs.{key}: node {step!r} has no output {output!r}")
                inputs[key] = DataInput(
                    getattr(spec_in, "type", None) or "uri_folder", uri, getattr(spec_in, "mode", None)
                )
            else:
                inputs[key] = data_of(data, getattr(spec_in, "mode", None), getattr(spec_in, "type", None))
        if node.type == "parallel":
            return parallel_spec(node, name, inputs)
        if node.type != "command":
            raise MlError(f"jobs.{name}: node type {node.type!r} cannot run locally (command, parallel)")
        return command_spec(node, name, inputs)


__all__ = ["NOT_STARTED", "PipelineRun", "dependencies", "order"]
