"""The Batch AI CLI's reading rules azbai follows (checked against the real CLI in test_batchai_cli_differential.py;
these run everywhere): the share's account is its URL's, the CLI's tolerances, where the account and key come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import azbai
from azbai.facade import SourceOptions, read
from azbai.source.placeholders import StorageAccount
from azbai.source.reader import load_job
from tests.az.conftest import write
from tests.conftest import CORPUS, DATA

CASES = DATA / "az-differential"


@pytest.fixture(autouse=True)
def _no_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AZURE_BATCHAI_STORAGE_ACCOUNT", "AZURE_BATCHAI_STORAGE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "az"))


def _accounts(path: Path, **options: str) -> dict[str, str]:
    plan = azbai.load(path, **options)  # type: ignore[arg-type]
    stores = {d.name: d.account_name for d in plan.datastores}
    refs = {r.name: stores[r.datastore] for r in plan.data_references}
    return {
        v.relative_mount_path: refs[v.data_reference]
        for v in plan.job_steps[0].job.volumes
        if v.data_reference
    }


def test_a_share_is_the_account_its_url_names() -> None:
    assert _accounts(CASES / "placeholder_name_literal_url.json", storage_account="flagacct") == {
        "logs": "otheraccount"
    }
    assert _accounts(CASES / "two_literal_accounts.json") == {"scripts": "urlaccount"}


@pytest.mark.parametrize(
    ("case", "paths"),
    [
        ("empty_credentials.json", {"properties.mountVolumes.azureFileShares[0].credentials", "properties.mountVolumes.azureBlobFileSystems[0].credentials"}),
        ("empty_account_key.json", {"properties.mountVolumes.azureFileShares[0].credentials", "properties.mountVolumes.azureBlobFileSystems[0].credentials"}),
        ("empty_account_name.json", {"properties.mountVolumes.azureFileShares[0].accountName", "properties.mountVolumes.azureFileShares[1].accountName"}),
        ("numbers_as_strings.json", {"properties.nodeCount", "properties.customToolkitSettings.commandLine", "properties.environmentVariables[0].value"}),
    ],
)  # fmt: skip
def test_what_the_cli_tolerated_is_accepted_with_a_warning_saying_what_it_did(
    case: str, paths: set[str]
) -> None:
    job = load_job(CASES / case, storage=StorageAccount.resolve("flagacct", "flag-key"))
    tolerated = {d.path for d in job.diagnostics if d.code == "cli-tolerance"}
    assert tolerated == paths
    assert all("the Batch AI CLI" in d.message for d in job.diagnostics if d.code == "cli-tolerance")
    if case == "numbers_as_strings.json":
        assert job.properties.node_count == 2
        assert job.properties.custom_toolkit_settings.command_line == "5"  # type: ignore[union-attr]
    if case == "empty_account_name.json":
        names = [s.account_name for s in job.properties.mount_volumes.azure_file_shares]  # type: ignore[union-attr]
        assert names == ["flagacct", "literalshare"]


def _config(tmp_path: Path, **values: str) -> None:
    write(tmp_path / "az" / "config", "[batchai]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))


def test_the_account_and_key_come_from_one_place_in_the_cli_s_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def resolved(name: str | None = None, key: str | None = None) -> tuple[str | None, str | None, bool]:
        account = StorageAccount.resolve(name, key)
        return account.name, account.key.reveal() if account.key else None, account.key_from_azure

    assert resolved() == (None, None, False)
    _config(tmp_path, storage_account="cfgacct", storage_key="cfg-key")
    assert resolved() == ("cfgacct", "cfg-key", False)  # the az configuration file
    monkeypatch.setenv("AZURE_BATCHAI_STORAGE_ACCOUNT", "envacct")
    assert resolved() == (
        "envacct",
        "cfg-key",
        False,
    )  # each of the two: the environment first, then the file
    monkeypatch.setenv("AZURE_BATCHAI_STORAGE_KEY", "env-key")
    assert resolved() == ("envacct", "env-key", False)
    assert resolved(key="flag-key") == ("envacct", "env-key", False)  # a key flag without a name was not used
    assert resolved("flagacct", "flag-key") == ("flagacct", "flag-key", False)
    assert resolved("flagacct") == ("flagacct", None, True)  # the CLI fetched the key from Azure


def test_where_the_cli_asked_azure_for_a_key_azbai_says_so(tmp_path: Path) -> None:
    job = load_job(CASES / "key_placeholder.json", storage=StorageAccount.resolve("flagacct"))
    from_azure = {d.path: d.message for d in job.diagnostics if d.code == "key-from-azure"}
    assert set(from_azure) == {
        "properties.mountVolumes.azureFileShares[0].credentials.accountKey",
        "properties.mountVolumes.azureBlobFileSystems[0].credentials",
    }
    assert all("fetched" in m and "from Azure" in m for m in from_azure.values())
    assert not any(d.is_error for d in job.diagnostics)


def test_validate_reads_the_cluster_file_with_the_account_given(tmp_path: Path) -> None:
    docs = CORPUS / "doc-examples" / "documentation" / "using-azure-cli-20"
    cluster = docs / "block31.cluster.json"
    job = write(tmp_path / "job.json", json.dumps({"properties": {
        "customToolkitSettings": {"commandLine": "ls $AZ_BATCHAI_MOUNT_ROOT"}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP"}}))  # fmt: skip
    without = azbai.validate(job, cluster=cluster)
    given = azbai.validate(job, cluster=cluster, storage_account="demoaccount")
    unresolved = [d for d in without.warnings if d.code == "unresolved-placeholder"]
    assert unresolved and not [d for d in given.warnings if d.code == "unresolved-placeholder"]
    assert read(job, SourceOptions(cluster=cluster, storage_account="demoaccount")).plan.datastores
