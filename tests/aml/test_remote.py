"""The same calls on an Azure ML workspace built offline give the real azureml objects (nothing contacts Azure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from azbai.aml import (
    DataReference,
    DataReferenceConfiguration,
    Datastore,
    Estimator,
    Experiment,
    MpiConfiguration,
    Schedule,
    ScriptRunConfig,
    Workspace,
)
from azbai.aml.remote import sdk_errors
from azbai.errors import PlanError, StorageError, TargetError
from azbai.facade import load
from tests.aml.conftest import write
from tests.conftest import DATA

KEY = "b2ZmbGluZS1rZXktdGhhdC1uZXZlci1sZWF2ZXMtbWVtb3J5"


@pytest.fixture(scope="module")
def azureml() -> Any:
    """The SDK, imported once for the module (``azureml.train.estimator`` costs seconds)."""
    import azureml.core
    import azureml.data.data_reference
    import azureml.train.estimator

    return azureml


@pytest.fixture
def offline(azureml: Any) -> Workspace:
    return Workspace.offline()


def how_to(ws: Workspace, source: Path) -> tuple[Estimator, dict[str, Any]]:
    """The datastore how-to's calls, unchanged between a local and an Azure ML workspace."""
    data = Datastore.register_azure_blob_container(ws, "data_ds", "data", "mystorage", account_key=KEY)
    share = Datastore.register_azure_file_share(ws, "logs_ds", "logs", "mystorage", account_key=KEY)
    refs = {
        "mnist": data.path("mnist_cntk", data_reference_name="mnist").as_mount(),
        "mnist_dl": data.path("mnist_cntk", data_reference_name="mnist_dl").as_download(
            path_on_compute="mnist"
        ),
        "model": share.path("model", data_reference_name="model").as_upload(path_on_compute="outputs/model"),
    }
    estimator = Estimator(
        source,
        "train.py",
        script_params={"--data": refs["mnist"], "--out": refs["model"], "--epochs": 3},
        inputs=[refs["mnist_dl"]],
        compute_target="cpu-cluster",
        environment_variables={"MODE": "train"},
        pip_packages=["torch"],
    )
    return estimator, refs


def test_registrations_are_the_sdk_datastores(offline: Workspace, azureml: Any) -> None:
    from azureml.data.azure_storage_datastore import AzureBlobDatastore, AzureFileDatastore

    blob = Datastore.register_azure_blob_container(offline, "data_ds", "data", "mystorage", account_key=KEY)
    share = Datastore.register_azure_file_share(offline, "logs_ds", "logs", "mystorage", account_key=KEY)
    assert isinstance(blob, AzureBlobDatastore) and isinstance(share, AzureFileDatastore)
    assert (blob.name, blob.container_name, blob.account_name) == ("data_ds", "data", "mystorage")
    assert (share.name, share.container_name, share.account_name) == ("logs_ds", "logs", "mystorage")
    assert sorted(offline.datastores) == ["data_ds", "logs_ds", "workspaceblobstore"]
    assert offline.get_default_datastore().name == "workspaceblobstore"
    offline.set_default_datastore("data_ds")
    assert (
        offline.get_default_datastore()
        is blob
        is Datastore.get(offline, "data_ds")
        is Datastore(offline, "data_ds")
    )
    with pytest.raises(StorageError, match=r"no datastore 'dta_ds'.*did you mean 'data_ds'"):
        Datastore.get(offline, "dta_ds")
    with pytest.raises(StorageError, match="invalid datastore name"):
        Datastore.register_azure_blob_container(offline, "bad-name", "data", "mystorage")
    with pytest.raises(TargetError, match=r"registering datastore 'nokey'.*shared key or SAS token"):
        Datastore.register_azure_file_share(offline, "nokey", "logs", "mystorage")  # the SDK's own check


def test_references_are_the_sdk_references(offline: Workspace, azureml: Any) -> None:
    from azureml.data.data_reference import DataReference as AzureMLDataReference

    blob = Datastore.register_azure_blob_container(offline, "data_ds", "data", "mystorage")
    mount = blob.path("mnist", data_reference_name="mnist").as_mount()
    down = blob.path("mnist").as_download(path_on_compute="mnist")
    up = DataReference(blob, "model", "model", mode="upload", path_on_compute="outputs/model")
    for ref in (mount, down, up):
        assert isinstance(ref, AzureMLDataReference)
    assert (mount.mode, str(mount)) == ("mount", "$AZUREML_DATAREFERENCE_mnist")
    assert (down.mode, down.path_on_compute) == ("download", "mnist")
    assert (up.mode, up.path_on_compute, up.path_on_datastore) == ("upload", "outputs/model", "model")
    with pytest.raises(PlanError, match="mode 'copy' is not one of"):
        DataReference(blob, "x", "p", mode="copy")


def test_an_estimator_becomes_the_sdk_estimator(offline: Workspace, tmp_path: Path) -> None:
    write(tmp_path / "src" / "train.py", "print('hi')\n")
    estimator, refs = how_to(offline, tmp_path / "src")
    built = estimator.to_azureml(offline)
    assert type(built).__name__ == "Estimator" and type(built).__module__.startswith(
        "azureml.train.estimator"
    )
    rc = built.run_config
    assert rc.script == "train.py" and rc.node_count == 1
    assert rc.arguments == ["--data", "$AZUREML_DATAREFERENCE_mnist", "--out", "$AZUREML_DATAREFERENCE_model",
                            "--epochs", 3]  # fmt: skip
    got = {
        n: (c.mode, c.data_store_name, c.path_on_data_store, c.path_on_compute)
        for n, c in rc.data_references.items()
    }
    assert got == {
        "mnist": ("mount", "data_ds", "mnist_cntk", None),
        "mnist_dl": ("download", "data_ds", "mnist_cntk", "mnist"),
        "model": ("upload", "logs_ds", "model", "outputs/model"),
    }
    assert rc.environment_variables["MODE"] == "train"
    assert "torch" in rc.environment.python.conda_dependencies.pip_packages
    # what the wrapper was given, and what a local run of the same object would stage
    assert {n: (r.mode, r.path_on_datastore) for n, r in estimator.data_references().items()} == {
        n: (c[0], c[2]) for n, c in got.items()
    }
    assert refs["model"].mode == "upload"


def test_local_references_convert_by_datastore_name(offline: Workspace, tmp_path: Path) -> None:
    """An Estimator written against the local workspace builds for Azure ML where the datastores have those names."""
    write(tmp_path / "src" / "train.py", "print('hi')\n")
    local = Workspace(tmp_path / "ws")
    estimator, _ = how_to(local, tmp_path / "src")
    how_to(offline, tmp_path / "src")  # the same registrations on the Azure ML side
    rc = estimator.to_azureml(offline).run_config
    assert {n: c.mode for n, c in rc.data_references.items()} == {
        "mnist": "mount",
        "mnist_dl": "download",
        "model": "upload",
    }
    with pytest.raises(TargetError, match="needs an Azure ML workspace"):
        estimator.to_azureml(local)
    fresh = Workspace.offline()
    with pytest.raises(StorageError, match="no datastore 'data_ds'"):
        estimator.to_azureml(fresh)


def test_several_nodes_use_mpi(offline: Workspace, tmp_path: Path) -> None:
    from azureml.core.compute import AmlCompute

    from azbai.targets.azureml_v1 import offline as offline_sdk

    write(tmp_path / "src" / "train.py", "print('hi')\n")
    gpu = offline_sdk.compute_target(
        offline.azureml,
        "gpu-cluster",
        AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=4),
    )
    blob = Datastore.register_azure_blob_container(offline, "data_ds", "data", "mystorage")
    ref = blob.path("mnist", data_reference_name="mnist").as_download()
    estimator = Estimator(
        tmp_path / "src",
        "train.py",
        script_params={"--data": ref},
        compute_target=gpu,
        node_count=2,
        distributed_training=MpiConfiguration(process_count_per_node=2),
    )
    rc = estimator.to_azureml(offline).run_config
    assert (rc.node_count, rc.communicator, rc.mpi.process_count_per_node) == (2, "Mpi", 2)
    with pytest.raises(TargetError, match=r"TrainingException: .*AmlCompute"):
        Estimator(tmp_path / "src", "train.py", compute_target="gpu-cluster", node_count=2).to_azureml(
            offline
        )

    config = ScriptRunConfig(
        tmp_path / "src",
        "train.py",
        arguments=["--data", str(ref), "--lr", 0.1],
        compute_target="gpu-cluster",
        distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=3),
    )
    config.run_config.data_references = {
        "mnist": DataReferenceConfiguration("data_ds", "mnist", None, "download")
    }
    built = config.to_azureml(offline)
    assert built.arguments == ["--data", "$AZUREML_DATAREFERENCE_mnist", "--lr", 0.1]
    assert (built.run_config.node_count, built.run_config.mpi.process_count_per_node) == (3, 2)
    ((name, cfg),) = built.run_config.data_references.items()
    assert (name, cfg.mode, cfg.data_store_name, cfg.path_on_data_store) == (
        "mnist",
        "download",
        "data_ds",
        "mnist",
    )
    objects = ScriptRunConfig(tmp_path / "src", "train.py", arguments=["--data", ref]).to_azureml(offline)
    assert objects.arguments == ["--data", "$AZUREML_DATAREFERENCE_mnist"]  # objects become their text
    assert objects.run_config.data_references["mnist"].mode == "download"


def test_nothing_is_submitted_offline(offline: Workspace, tmp_path: Path) -> None:
    write(tmp_path / "src" / "train.py", "print('hi')\n")
    estimator, _ = how_to(offline, tmp_path / "src")
    with pytest.raises(TargetError, match="is offline: nothing is submitted"):
        Experiment(offline, "mnist").submit(estimator)
    with pytest.raises(TargetError, match=r"azbai\.migrate"):
        Experiment(offline, "mnist").submit(load(DATA / "pipeline" / "pipeline.json"))


def test_a_schedule_is_the_sdk_schedule(offline: Workspace) -> None:
    from azbai.targets.azureml_v1 import offline as offline_sdk

    data = Datastore.register_azure_blob_container(offline, "inbox", "inbox", "mystorage")
    schedule = Schedule.create(
        offline,
        "words-trigger",
        "published-pipeline-id",
        "words",
        datastore=data,
        path_on_datastore="incoming",
        polling_interval=5,
        data_path_parameter_name="text",
        **offline_sdk.schedule_options(offline.azureml),
    )
    assert type(schedule).__module__.startswith("azureml.pipeline.core")
    assert (schedule.datastore_name, schedule.path_on_datastore) == ("inbox", "incoming")
    assert (schedule.polling_interval, schedule.data_path_parameter_name) == (5, "text")
    assert schedule.pipeline_id == "published-pipeline-id"
    share = Datastore.register_azure_file_share(offline, "logs", "logs", "mystorage", account_key=KEY)
    with pytest.raises(StorageError, match="watches a blob container"):
        Schedule.create(offline, "s", "pid", datastore=share, data_path_parameter_name="text")


def test_sdk_errors_are_translated_without_secrets() -> None:
    with (
        pytest.raises(TargetError, match=r"registering: ValueError: bad key \*\*\* more") as failure,
        sdk_errors("registering", [KEY, None]),
    ):
        raise ValueError(f"bad key {KEY}\nmore")
    assert KEY not in str(failure.value) and isinstance(failure.value.__cause__, ValueError)


def test_from_config_without_a_config_says_so(azureml: Any, tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"reading the Azure ML workspace config: .*config"):
        Workspace.from_config(path=str(tmp_path))
