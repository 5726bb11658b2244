"""Run the real Batch AI CLI (azure-cli-batchai 0.4.10) over job files, its network calls stubbed.

Run with the interpreter of ``.venv-azcli`` (``make differential`` builds it), never imported by azbai's tests:

    .venv-azcli/bin/python tests/az/batchai_cli_driver.py CASES.json > RESULTS.json

``CASES.json`` is a list of ``{"file", "flags": {"name", "key"}, "env": {...}}``; each runs
``custom.create_job`` in a fresh process environment (``AZURE_CONFIG_DIR`` and the two variables as given), with
the calls to Azure stubbed: the cluster exists, no job of that name exists, and the key Azure would have listed for
account ``A`` is ``azure-key-of-A``. Each result is ``{"ok", "error", "shares": [...], "blobs": [...]}``, the mount
volumes exactly as the CLI would have sent them.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

warnings.simplefilter("ignore")  # paramiko's and cryptography's deprecations, not ours

import azure.cli.command_modules.batchai.custom as custom  # noqa: E402
from knack.config import CLIConfig  # noqa: E402
from knack.util import CLIError  # noqa: E402

AZURE_KEY = "azure-key-of-"


def _azure_key(cli_ctx: object, account_name: str, account_key: str | None) -> str:
    return account_key or AZURE_KEY + account_name  # storage_accounts.list_keys, stubbed


class _Cmd:
    def __init__(self) -> None:
        # az's own configuration: $AZURE_CONFIG_DIR/config, environment variables AZURE_<SECTION>_<OPTION> first
        directory = os.environ.get("AZURE_CONFIG_DIR") or os.path.expanduser(os.path.join("~", ".azure"))
        self.cli_ctx = type(
            "Ctx", (), {"config": CLIConfig(config_dir=directory, config_env_var_prefix="AZURE")}
        )()


class _Resource:
    def __init__(self, resource_id: str) -> None:
        self.id = resource_id


class _Client:
    def __init__(self) -> None:
        outer = self

        class Jobs:
            def create(
                self, group: str, workspace: str, experiment: str, name: str, params: object
            ) -> object:
                outer.params = params
                return params

        class Clusters:
            def get(self, group: str, workspace: str, name: str) -> _Resource:
                return _Resource(
                    f"/subscriptions/x/resourceGroups/{group}/providers/Microsoft.BatchAI/workspaces/{workspace}/clusters/{name}"
                )

        self.jobs = Jobs()
        self.clusters = Clusters()
        self.params: object = None


def run(case: dict) -> dict:
    custom._get_storage_account_key = _azure_key
    custom._ensure_job_not_exist = lambda *args: None
    for name in ("AZURE_BATCHAI_STORAGE_ACCOUNT", "AZURE_BATCHAI_STORAGE_KEY"):
        os.environ.pop(name, None)
    os.environ.update(case["env"])
    client = _Client()
    try:
        custom.create_job(
            _Cmd(), client, "rg", "ws", "exp", "job", case["file"], "cluster",
            account_name=case["flags"].get("name"), account_key=case["flags"].get("key"),
        )  # fmt: skip
    except (
        CLIError,
        ValueError,
        TypeError,
        AttributeError,
    ) as exc:  # msrest's DeserializationError is a ValueError
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    volumes = client.params.mount_volumes
    shares, blobs = [], []
    for ref in (volumes.azure_file_shares or []) if volumes else []:
        key = ref.credentials.account_key if ref.credentials else None
        shares.append(
            {
                "path": ref.relative_mount_path,
                "accountName": ref.account_name,
                "url": ref.azure_file_url,
                "key": key,
            }
        )
    for ref in (volumes.azure_blob_file_systems or []) if volumes else []:
        key = ref.credentials.account_key if ref.credentials else None
        blobs.append(
            {
                "path": ref.relative_mount_path,
                "accountName": ref.account_name,
                "container": ref.container_name,
                "key": key,
            }
        )
    return {"ok": True, "error": None, "shares": shares, "blobs": blobs}


def main() -> None:
    with open(sys.argv[1]) as stream:
        cases = json.load(stream)
    results = []
    saved = dict(os.environ)
    for case in cases:
        results.append(run(case))
        os.environ.clear()
        os.environ.update(saved)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
