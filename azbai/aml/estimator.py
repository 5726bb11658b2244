"""``Estimator`` and ``ScriptRunConfig``: what to run, with which data, on how many nodes (Azure ML v1's arguments).

Both describe a script of a source directory with arguments, data references and a node count; neither does
anything until :meth:`azbai.Experiment.submit`. A data reference may stand in ``script_params``, ``arguments`` or
``inputs`` (as an object, or as its ``str()``, ``$AZUREML_DATAREFERENCE_<name>``, when ``run_config.data_references``
names it), as in Azure ML's datastore how-to. ``to_azureml(ws)`` gives the real SDK object for an Azure ML workspace
without submitting it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azbai.aml.data_reference import DataReference, DataReferenceConfiguration
from azbai.errors import PlanError

if TYPE_CHECKING:
    from azbai.aml.workspace import Workspace


@dataclass(frozen=True)
class MpiConfiguration:
    """Several processes per run under MPI (Azure ML's ``MpiConfiguration``; also ``Estimator``'s ``Mpi``)."""

    process_count_per_node: int = 1
    node_count: int = 1


@dataclass
class RunConfiguration:
    """The parts of Azure ML's ``RunConfiguration`` a script run uses: data references, variables, nodes."""

    data_references: dict[str, DataReferenceConfiguration | DataReference] = field(default_factory=dict)
    environment_variables: dict[str, str] = field(default_factory=dict)
    node_count: int = 1


class _RunSpec:
    """What an Estimator and a ScriptRunConfig share: the script, its arguments, data, nodes and variables."""

    source_directory: str
    script: str
    compute_target: Any
    run_config: RunConfiguration
    process_count_per_node: int
    max_run_duration_seconds: int | None

    def argument_list(self) -> list[Any]:
        """The script's arguments, data references as objects or as their ``$AZUREML_DATAREFERENCE_`` text."""
        raise NotImplementedError

    @property
    def node_count(self) -> int:
        """How many nodes run the script."""
        return self.run_config.node_count

    def data_references(self) -> dict[str, Any]:
        """Every data reference the run gets, by name: those in the arguments, the inputs and the run config."""
        found: dict[str, Any] = {}
        named = [
            (v.data_reference_name, v) for v in [*self.argument_list(), *self._inputs()] if is_reference(v)
        ]
        for name, value in [*named, *self.run_config.data_references.items()]:
            if name in found and not _same(found[name], value):
                raise PlanError(
                    f"two different data references are named {name!r} ({_describe(found[name])} and "
                    f"{_describe(value)}): give each its own data_reference_name"
                )
            found[name] = value
        return found

    def _inputs(self) -> list[Any]:
        return []

    def check(self) -> None:
        """:class:`PlanError` when the source directory or the script is missing, or a count is wrong."""
        source = Path(self.source_directory)
        if not source.is_dir():
            raise PlanError(f"source_directory {self.source_directory!r} is not a directory")
        if not self.script or not (source / self.script).is_file():
            raise PlanError(f"the script {self.script!r} is not a file of the source directory {source}")
        if self.node_count < 1 or self.process_count_per_node < 1:
            raise PlanError(
                f"node_count ({self.node_count}) and process_count_per_node ({self.process_count_per_node}) "
                "must be at least 1"
            )
        self.data_references()

    def to_azureml(self, workspace: Workspace) -> Any:
        """The Azure ML SDK object for ``workspace`` (from ``from_config`` or ``offline``), not submitted."""
        raise NotImplementedError


class Estimator(_RunSpec):
    """Run ``entry_script`` of ``source_directory`` with ``script_params`` (Azure ML v1's ``Estimator``).

    ``script_params`` is a dict (``{"--data": ds.path("mnist").as_mount()}``) or a list of arguments; ``inputs``
    lists further data references. ``node_count`` nodes run ``process_count_per_node`` processes each, under MPI
    when there is more than one (``distributed_training=MpiConfiguration(...)`` sets the count per node too).
    ``compute_target``, ``custom_docker_image``, ``pip_packages`` and ``use_gpu`` matter on Azure ML only.
    """

    def __init__(
        self,
        source_directory: str | os.PathLike[str],
        entry_script: str | None = None,
        *,
        script_params: Mapping[str, Any] | Sequence[Any] | None = None,
        compute_target: Any = None,
        inputs: Iterable[Any] | None = None,
        node_count: int = 1,
        process_count_per_node: int = 1,
        distributed_training: Any = None,
        environment_variables: Mapping[str, str] | None = None,
        pip_packages: Sequence[str] | None = None,
        conda_packages: Sequence[str] | None = None,
        custom_docker_image: str | None = None,
        use_gpu: bool = False,
        use_docker: bool = True,
        max_run_duration_seconds: int | None = None,
    ) -> None:
        if entry_script is None:
            raise PlanError("Estimator needs an entry_script")
        self.source_directory = os.fspath(source_directory)
        self.script = entry_script
        self.entry_script = entry_script
        self.script_params = dict(script_params) if isinstance(script_params, Mapping) else script_params
        self.compute_target = compute_target
        self.inputs = list(inputs or [])
        count = getattr(distributed_training, "process_count_per_node", None)
        self.process_count_per_node = int(count) if count else process_count_per_node
        self.distributed_training = distributed_training
        self.run_config = RunConfiguration(
            environment_variables={k: str(v) for k, v in (environment_variables or {}).items()},
            node_count=node_count,
        )
        self.pip_packages = list(pip_packages or [])
        self.conda_packages = list(conda_packages or [])
        self.custom_docker_image = custom_docker_image
        self.use_gpu = use_gpu
        self.use_docker = use_docker
        self.max_run_duration_seconds = max_run_duration_seconds

    def argument_list(self) -> list[Any]:
        """``script_params`` flattened: ``{"--data": ref}`` → ``["--data", ref]``."""
        if self.script_params is None:
            return []
        if isinstance(self.script_params, dict):
            return [item for key, value in self.script_params.items() for item in (key, value)]
        return list(self.script_params)

    def _inputs(self) -> list[Any]:
        return list(self.inputs)

    def to_azureml(self, workspace: Workspace) -> Any:
        """``azureml.train.estimator.Estimator`` with the same script, arguments, data references and nodes."""
        from azbai.aml import remote

        return remote.estimator(self, workspace)


class ScriptRunConfig(_RunSpec):
    """Run ``script`` of ``source_directory`` with ``arguments`` (Azure ML v1's ``ScriptRunConfig``).

    A data reference may stand in ``arguments`` as an object or as its ``str()`` when
    ``run_config.data_references`` holds it (the how-to's ``{ref.data_reference_name: ref.to_config()}``).
    ``distributed_job_config=MpiConfiguration(process_count_per_node, node_count)`` runs it on several nodes.
    """

    def __init__(
        self,
        source_directory: str | os.PathLike[str],
        script: str | None = None,
        arguments: Sequence[Any] | None = None,
        run_config: RunConfiguration | None = None,
        compute_target: Any = None,
        environment: Any = None,
        distributed_job_config: Any = None,
        max_run_duration_seconds: int | None = None,
        *,
        environment_variables: Mapping[str, str] | None = None,
    ) -> None:
        if script is None:
            raise PlanError("ScriptRunConfig needs a script")
        self.source_directory = os.fspath(source_directory)
        self.script = script
        self.arguments = list(arguments or [])
        self.run_config = run_config if run_config is not None else RunConfiguration()
        self.run_config.environment_variables.update(
            {k: str(v) for k, v in (environment_variables or {}).items()}
        )
        self.compute_target = compute_target
        self.environment = environment
        self.distributed_job_config = distributed_job_config
        self.process_count_per_node = int(getattr(distributed_job_config, "process_count_per_node", 1) or 1)
        nodes = getattr(distributed_job_config, "node_count", None)
        if nodes:
            self.run_config.node_count = int(nodes)
        self.max_run_duration_seconds = max_run_duration_seconds

    def argument_list(self) -> list[Any]:
        """The arguments as given."""
        return list(self.arguments)

    def to_azureml(self, workspace: Workspace) -> Any:
        """``azureml.core.ScriptRunConfig`` with the same script, arguments, data references and nodes."""
        from azbai.aml import remote

        return remote.script_run_config(self, workspace)


def is_reference(value: Any) -> bool:
    """An azbai or an azureml ``DataReference`` (not a string, not a configuration)."""
    return isinstance(value, DataReference) or (
        hasattr(value, "data_reference_name")
        and hasattr(value, "path_on_datastore")
        and hasattr(value, "mode")
    )


def is_configuration(value: Any) -> bool:
    """An azbai or an azureml ``DataReferenceConfiguration``."""
    return isinstance(value, DataReferenceConfiguration) or hasattr(value, "data_store_name")


def _same(a: Any, b: Any) -> bool:
    return _summary(a) == _summary(b)


def _summary(ref: Any) -> tuple[Any, ...]:
    if is_configuration(ref):
        return (ref.data_store_name, (ref.path_on_data_store or "").strip("/"), ref.mode)
    store = getattr(ref.datastore, "name", None)
    return (store, (ref.path_on_datastore or "").strip("/"), ref.mode)


def _describe(ref: Any) -> str:
    store, path, mode = _summary(ref)
    return f"{mode} of {store}:{path or '/'}"
