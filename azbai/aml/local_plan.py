"""An Estimator or a ScriptRunConfig as a single-job plan, so the local engine runs it as it runs a Batch AI job.

The job runs ``cd <snapshot> && python <script> <arguments>`` (a copy of the source directory, as Azure ML snapshots
it), on ``node_count`` simulated nodes: one process (``customToolkit``-like) or, for more than one, ranks under MPI.
Each data reference becomes a plan data reference on a plan datastore pointing at the same local store, attached to
the job as an input (mount, download) or an output directory (upload); the runner stages it, the launcher exports
its path as ``$AZUREML_DATAREFERENCE_<name>``, and the arguments name that variable, so the script gets the path in
its argument and in its environment. Logs go to the job's ``stdouterr`` directory, as for a Batch AI job.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azbai.aml.data_reference import ENV_PREFIX, DataReference, DataReferenceConfiguration
from azbai.aml.datastore import Datastore
from azbai.aml.estimator import Estimator, is_reference
from azbai.errors import PlanError, StorageError
from azbai.plan import model

if TYPE_CHECKING:
    from azbai.aml.estimator import ScriptRunConfig
    from azbai.aml.workspace import Workspace

_REFERENCE_RE = re.compile(r"\$\{?" + ENV_PREFIX + r"([A-Za-z0-9_]+)\}?")
_IGNORED = (".git", "__pycache__", ".ipynb_checkpoints", ".azbai")
STDOUTERR_PREFIX = "$AZ_BATCHAI_MOUNT_ROOT/azureml-logs"
JOB_NAME = "azureml"


def local_references(spec: Estimator | ScriptRunConfig, workspace: Workspace) -> dict[str, DataReference]:
    """The run's data references as local ones on datastores registered in ``workspace``."""
    found: dict[str, DataReference] = {}
    for name, ref in spec.data_references().items():
        if isinstance(ref, DataReference):
            registered = Datastore.get(workspace, ref.datastore.name)
            if registered != ref.datastore:
                raise StorageError(
                    f"data reference {name!r}: datastore {ref.datastore.name!r} is registered differently in "
                    f"this workspace ({registered.account_name}/{registered.container_name})"
                )
            found[name] = ref
        elif isinstance(ref, DataReferenceConfiguration):
            datastore = Datastore.get(workspace, ref.data_store_name)
            found[name] = DataReference(
                datastore, name, ref.path_on_data_store, ref.mode, ref.path_on_compute, ref.overwrite
            )
        else:
            raise PlanError(
                f"data reference {name!r} is an Azure ML SDK object; a local run takes references of "
                "azbai.Workspace() datastores (ds.path(...))"
            )
    return found


def check_inputs(references: dict[str, DataReference]) -> None:
    """A download of a path where there is nothing is a mistake: say so before the run (Azure ML fails the run)."""
    for name, ref in references.items():
        if ref.mode != "download":
            continue
        store = ref.datastore.store()
        prefix = (ref.path_on_datastore or "").strip("/")
        entries = store.list(prefix) if store.root_exists() else []
        if not any(not prefix or e.path == prefix or e.path.startswith(prefix + "/") for e in entries):
            raise StorageError(
                f"data reference {name!r} downloads {store.url_for(prefix)}, where there is nothing: upload the "
                "data first (ds.upload), or give an output as_upload() or as_mount()"
            )


def shell_word(value: Any, references: dict[str, DataReference]) -> str:
    """One argument as shell text: quoted, with ``$AZUREML_DATAREFERENCE_<name>`` left for the shell to expand."""
    if is_reference(value):
        value = str(value)
    text = str(value)
    parts, position = [], 0
    for match in _REFERENCE_RE.finditer(text):
        name = match.group(1)
        if name not in references:
            known = ", ".join(sorted(references)) or "none"
            raise PlanError(
                f"argument {text!r} names data reference {name!r}, which the run does not have (it has: {known}); "
                "pass the reference itself, or add it to run_config.data_references"
            )
        if match.start() > position:
            parts.append(shlex.quote(text[position : match.start()]))
        parts.append(f'"${{{ENV_PREFIX}{name}}}"')
        position = match.end()
    if position < len(text) or not parts:
        parts.append(shlex.quote(text[position:]))
    return "".join(parts)


def snapshot(spec: Estimator | ScriptRunConfig, target: Path, workspace_root: Path) -> Path:
    """Copy the source directory to ``target`` (without VCS, caches and a workspace inside it)."""
    source = Path(spec.source_directory).resolve()
    inner = workspace_root.resolve()

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in _IGNORED}
        skipped |= {n for n in names if (Path(directory) / n).resolve() == inner}
        return skipped

    try:
        shutil.copytree(source, target, ignore=ignore, symlinks=True)
    except OSError as exc:
        raise PlanError(f"cannot snapshot {source}: {exc}") from exc
    return target


def job_plan(
    spec: Estimator | ScriptRunConfig,
    workspace: Workspace,
    *,
    run_id: str,
    experiment: str,
    snapshot_dir: Path,
) -> model.Plan:
    """The single-job plan that runs ``spec`` in ``snapshot_dir`` with its data references."""
    spec.check()
    references = local_references(spec, workspace)
    arguments = " ".join(shell_word(a, references) for a in spec.argument_list())
    command = f"cd {shlex.quote(str(snapshot_dir))} && python {shlex.quote(spec.script)}"
    command += f" {arguments}" if arguments else ""
    count = spec.node_count * spec.process_count_per_node
    if count == 1:
        launch = model.Launch(
            "custom", model.LaunchMode.MASTER_ONLY, 1, 1,
            (model.ProcessGroup("master", 1, command, "stdout.txt", "stderr.txt"),), model.Distribution.NONE,
        )  # fmt: skip
    else:
        launch = model.Launch(
            "mpi", model.LaunchMode.MPI, spec.node_count, count,
            (model.ProcessGroup("rank", count, command, "stdout.txt", "stderr.txt"),), model.Distribution.MPI,
        )  # fmt: skip
    inputs = tuple(
        model.InputDirectory(name, str(ref), name) for name, ref in references.items() if ref.mode != "upload"
    )
    outputs = tuple(
        model.OutputDirectory(name, "outputs", None, name)
        for name, ref in references.items()
        if ref.mode == "upload"
    )
    job = model.Job(
        name=JOB_NAME,
        node_count=spec.node_count,
        std_out_err_path_prefix=STDOUTERR_PREFIX,
        volumes=(),
        input_directories=inputs,
        output_directories=outputs,
        environment_variables=tuple(
            model.EnvironmentVariable(k, v) for k, v in sorted(spec.run_config.environment_variables.items())
        ),
        secrets=(),
        job_preparation=None,
        launch=launch,
        max_wall_clock_seconds=spec.max_run_duration_seconds,
    )
    stores = {ref.datastore.name: ref.datastore.plan_datastore() for ref in references.values()}
    target = spec.compute_target
    compute_name = str(getattr(target, "name", target) or "local")
    image = getattr(spec, "custom_docker_image", None) or "local"
    return model.Plan(
        name=run_id,
        experiment=experiment,
        source=model.Source(
            file=f"{type(spec).__name__}({spec.source_directory}/{spec.script})",
            schema_version=None,
            toolkit=launch.toolkit,
        ),
        datastores=tuple(stores.values()),
        data_references=tuple(ref.plan_reference() for ref in references.values()),
        container=model.Container(image=image),
        compute=model.Compute(compute_name, "local", 0, "dedicated", 0, spec.node_count),
        steps=(model.Step(run_id, job, tuple(references)),),
        variables=(),
        notes=(),
        mapping=(),
    )


def describe(spec: Estimator | ScriptRunConfig, references: dict[str, DataReference]) -> dict[str, Any]:
    """The run definition ``get_details()`` reports (Azure ML's field names)."""
    return {
        "script": spec.script,
        "arguments": [str(a) for a in spec.argument_list()],
        "nodeCount": spec.node_count,
        "processCountPerNode": spec.process_count_per_node,
        "environmentVariables": dict(spec.run_config.environment_variables),
        "dataReferences": {
            name: {
                "dataStoreName": ref.datastore.name,
                "pathOnDataStore": ref.path_on_datastore,
                "mode": ref.mode,
                "pathOnCompute": ref.path_on_compute,
                "overwrite": ref.overwrite,
            }
            for name, ref in references.items()
        },
        "estimator": isinstance(spec, Estimator),
    }
