"""Storage keys, SAS tokens, registry passwords and job secrets never reach a file, a message or a plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import azbai
from tests.conftest import CORPUS

ACCOUNT_KEY = "c2VjcmV0LWFjY291bnQta2V5LXRoYXQtbXVzdC1uZXZlci1sZWFr=="
ENV_KEY = "ZW52aXJvbm1lbnQta2V5LXRoYXQtbXVzdC1uZXZlci1sZWFr=="


def job_with_every_kind_of_secret(tmp_path: Path) -> Path:
    job = {
        "properties": {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "python $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/run.py"},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "secrets": [{"name": "DB_PASSWORD", "value": "inline-job-secret-value"}],
            "environmentVariables": [{"name": "MODE", "value": "train"}],
            "mountVolumes": {
                "azureFileShares": [
                    {
                        "azureFileUrl": "https://mystorage.file.core.windows.net/logs?sv=2018&sig=SAS-SIGNATURE-VALUE",
                        "relativeMountPath": "logs",
                        "credentials": {"accountKey": "inline-account-key-value"},
                    },
                    {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/scripts",
                     "relativeMountPath": "scripts", "credentials": {"accountKey": "<AZURE_BATCHAI_STORAGE_KEY>"}},
                ],
                "azureBlobFileSystems": [
                    {"accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "containerName": "data", "relativeMountPath": "data"}
                ],
            },
            "containerSettings": {
                "imageSourceRegistry": {
                    "image": "demo.azurecr.io/myimage",
                    "serverUrl": "demo.azurecr.io",
                    "credentials": {"username": "demo", "password": "registry-password-value"},
                }
            },
        }
    }  # fmt: skip
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return path


SECRETS = (
    ACCOUNT_KEY, ENV_KEY, "inline-job-secret-value", "SAS-SIGNATURE-VALUE", "inline-account-key-value",
    "registry-password-value", "Value 3", "demoPassword",
)  # fmt: skip


def assert_nowhere(texts: list[str]) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "azbai", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_migrate_writes_no_secret(tmp_path: Path) -> None:
    job = job_with_every_kind_of_secret(tmp_path)
    out = tmp_path / "out"
    result = run(
        "migrate",
        str(job),
        "-o",
        str(out),
        "--storage-account-name",
        "mystorage",
        "--storage-account-key",
        ACCOUNT_KEY,
    )
    assert result.returncode == 0, result.stderr
    files = [p.read_text() for p in out.rglob("*") if p.is_file()]
    v2_files = sorted(p.relative_to(out).as_posix() for p in (out / "v2").rglob("*") if p.is_file())
    assert v2_files == [
        "v2/computes/gpu-cluster.yml",
        "v2/datastores/data_blob.yml",
        "v2/datastores/logs_share.yml",
        "v2/datastores/scripts_share.yml",
        "v2/job.yml",
        "v2/submit.py",
    ]
    assert len(files) == 6 + len(v2_files)
    assert_nowhere([*files, result.stdout, result.stderr])
    # the plan still says where each secret comes from
    plan = json.loads((out / "plan.json").read_text())
    assert plan["steps"][0]["job"]["secrets"] == [
        {"name": "DB_PASSWORD", "source": "environment", "secret_url": None}
    ]


def test_key_from_the_environment_is_not_written(tmp_path: Path) -> None:
    job = job_with_every_kind_of_secret(tmp_path)
    out = tmp_path / "out"
    result = run("migrate", str(job), "-o", str(out), env={"AZURE_BATCHAI_STORAGE_ACCOUNT": "envstorage",
                                                           "AZURE_BATCHAI_STORAGE_KEY": ENV_KEY})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "envstorage" in (out / "plan.json").read_text()
    assert_nowhere([p.read_text() for p in out.rglob("*") if p.is_file()] + [result.stdout, result.stderr])


def test_doc_examples_with_secrets(tmp_path: Path) -> None:
    docs = CORPUS / "doc-examples/documentation"
    result = run(
        "migrate", str(docs / "using-azure-cli-20/block55.job.json"), "-o", str(tmp_path / "a"),
        "--cluster", str(docs / "using-azure-cli-20/block29.cluster.json"), "--storage-account-key", ACCOUNT_KEY,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    merged = run(
        "migrate", str(CORPUS / "recipes/CNTK/CNTK-GPU-Python/job.json"), "-o", str(tmp_path / "b"),
        "--merge", str(docs / "using-azure-cli-20/block58.job.json"),
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    texts = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert_nowhere([*texts, result.stdout, result.stderr, merged.stdout, merged.stderr])


def test_errors_do_not_quote_secrets(tmp_path: Path) -> None:
    job = json.loads(job_with_every_kind_of_secret(tmp_path).read_text())
    props = job["properties"]
    props["mountVolumes"]["azureBlobFileSystems"][0]["credentials"] = {
        "accountKey": ["inline-account-key-value"]
    }
    props["secrets"][0]["value"] = {"nested": "inline-job-secret-value"}
    props["containerSettings"]["imageSourceRegistry"]["credentials"]["password"] = 42
    (tmp_path / "bad.json").write_text(json.dumps(job))
    for command in ("validate", "migrate"):
        result = run(command, str(tmp_path / "bad.json"), "--storage-account-key", ACCOUNT_KEY)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "value hidden" in result.stderr
        assert_nowhere([result.stdout, result.stderr])


def test_v2_files_messages_and_dry_run_hold_no_secret(tmp_path: Path) -> None:
    """The v2 target: no key, SAS, registry password or job secret in a file, nor in what submit.py prints."""
    pytest.importorskip("azure.ai.ml")
    job = job_with_every_kind_of_secret(tmp_path)
    out = tmp_path / "out"
    result = run(
        "migrate", str(job), "-o", str(out), "--target", "v2", "--storage-account-name", "mystorage",
        "--storage-account-key", ACCOUNT_KEY, env={"AZURE_BATCHAI_STORAGE_KEY": ENV_KEY},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    texts = [p.read_text() for p in out.rglob("*") if p.is_file()]
    # the keys go in at submit time only: the datastore files have no credentials section at all
    for store in (out / "v2/datastores").glob("*.yml"):
        assert "\ncredentials:" not in store.read_text() and "account_key:" not in store.read_text()
    # the job secret and the registry password have no place in v2 files: the launcher reads Key Vault
    assert "DB_PASSWORD" in (out / "v2/submit.py").read_text()
    secrets_env = {"AZURE_BATCHAI_STORAGE_KEY": ENV_KEY, "DB_PASSWORD": "inline-job-secret-value"}
    dry = subprocess.run(
        [sys.executable, str(out / "v2/submit.py"), "--dry-run", "--json"],
        capture_output=True, text=True, env={**os.environ, **secrets_env}, cwd=tmp_path,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert_nowhere([*texts, result.stdout, result.stderr, dry.stdout, dry.stderr])


def test_v2_entities_with_a_key_never_show_it(tmp_path: Path) -> None:
    """The key reaches the datastore entity in memory (for create_or_update), and no message or summary."""
    pytest.importorskip("azure.ai.ml")
    from azbai.errors import TargetError
    from azbai.facade import render_files
    from azbai.fsutil import write_tree
    from azbai.targets.azureml_v2 import build_entities

    plan = azbai.load(job_with_every_kind_of_secret(tmp_path), storage_account="mystorage")
    write_tree(tmp_path / "out", render_files(plan, target="v2"))
    module = build_entities(tmp_path / "out")["module"]
    stores = module.load_datastores("mystorage", ACCOUNT_KEY)
    assert {type(s.credentials).__name__ for s in stores.values()} == {"AccountKeyConfiguration"}
    summary = module.summarize({**module.build(), "datastores": stores})
    assert_nowhere([json.dumps(summary)])
    # a rejected file: the message names the problem, not the key that was given
    blob = tmp_path / "out/v2/datastores/data_blob.yml"
    blob.write_text(blob.read_text().replace("type: azure_blob", "type: azure_blobs"))
    with pytest.raises(TargetError) as caught:
        build_entities(tmp_path / "out")
    assert_nowhere([str(caught.value)])
    # azure-ai-ml's own error for a bad file loaded with the key: it must not echo the key either
    bad = tmp_path / "out/v2/datastores/logs_share.yml"
    bad.write_text(bad.read_text().replace("file_share_name:", "file_share_nam:"))
    with pytest.raises(Exception) as raised:
        module.load_datastores("mystorage", ACCOUNT_KEY)
    assert_nowhere([str(raised.value), repr(raised.value)])
