"""The real Batch AI CLI (azure-cli-batchai 0.4.10, its ``custom.create_job``) against azbai's reading rules.

Every corpus job file (and the cases of ``tests/data/az-differential``: the share's account in its URL, the
tolerances, numbers as strings) in every way of giving the storage account: flags, environment variables, the
``[batchai]`` section of the az configuration file, mixtures, nothing. The CLI runs in its own venv
(``.venv-azcli``, built by ``make differential``) with its calls to Azure stubbed (the key Azure lists for account
``A`` is ``azure-key-of-A``); azbai must accept what it accepted, mount the same shares and containers of the same
accounts, with the same keys — or say that the key came from Azure, or that an account or key is missing where the
CLI refused for lack of it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from azbai.errors import AzbaiError, SpecError
from azbai.facade import SourceOptions
from azbai.source.diagnostics import Diagnostic
from azbai.source.placeholders import StorageAccount
from azbai.source.storage_names import parse_file_share_url
from tests.conftest import DATA, ROOT, corpus_files, corpus_id

CLI_PYTHON = ROOT / ".venv-azcli" / "bin" / "python"
DRIVER = Path(__file__).with_name("batchai_cli_driver.py")
CASES = sorted((DATA / "az-differential").glob("*.json"))
FILES = corpus_files("job") + CASES
AZURE_KEY = "azure-key-of-"
MISSING = (
    "Please configure Azure Storage account name",
    "Please configure Azure Storage account key",
    # a container whose <AZURE_BATCHAI_STORAGE_ACCOUNT> had no account to become (or whose accountName is empty)
    "Ill-formed Azure Blob File System reference",
)

#: scenario → (flags, environment variables, [batchai] section of the az configuration file)
SCENARIOS: dict[str, tuple[dict[str, str], dict[str, str], dict[str, str] | None]] = {
    "flags": ({"name": "flagacct", "key": "flag-key"}, {}, None),
    "flag-name-only": ({"name": "flagacct"}, {}, None),
    "flag-key-only": ({"key": "flag-key"}, {}, None),
    "environment": (
        {},
        {"AZURE_BATCHAI_STORAGE_ACCOUNT": "envacct", "AZURE_BATCHAI_STORAGE_KEY": "env-key"},
        None,
    ),
    "environment-name-only": ({}, {"AZURE_BATCHAI_STORAGE_ACCOUNT": "envacct"}, None),
    "config-file": ({}, {}, {"storage_account": "cfgacct", "storage_key": "cfg-key"}),
    "environment-name-config-key": (
        {},
        {"AZURE_BATCHAI_STORAGE_ACCOUNT": "envacct"},
        {"storage_key": "cfg-key"},
    ),
    "flag-name-over-environment-and-config": (
        {"name": "flagacct"},
        {"AZURE_BATCHAI_STORAGE_ACCOUNT": "envacct", "AZURE_BATCHAI_STORAGE_KEY": "env-key"},
        {"storage_account": "cfgacct", "storage_key": "cfg-key"},
    ),
    "nothing": ({}, {}, None),
}

pytestmark = pytest.mark.skipif(
    not CLI_PYTHON.exists(),
    reason="the real Batch AI CLI is not installed here: `make test` (or `make differential`) installs it into .venv-azcli",
)


def _config_dir(base: Path, scenario: str) -> str:
    directory = base / scenario
    directory.mkdir(parents=True, exist_ok=True)
    section = SCENARIOS[scenario][2]
    if section:
        lines = ["[batchai]"] + [f"{k} = {v}" for k, v in section.items()]
        (directory / "config").write_text("\n".join(lines) + "\n")
    return str(directory)


@pytest.fixture(scope="module")
def cli_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[tuple[str, str], dict[str, Any]]]:
    """The az configuration directories, and the real CLI's result for every file × scenario (one driver run)."""
    base = tmp_path_factory.mktemp("az-config")
    cases = []
    keys = []
    for path in FILES:
        for scenario, (flags, env, _section) in SCENARIOS.items():
            cases.append(
                {
                    "file": str(path),
                    "flags": flags,
                    "env": {**env, "AZURE_CONFIG_DIR": _config_dir(base, scenario)},
                }
            )
            keys.append((str(path), scenario))
    (base / "cases.json").write_text(json.dumps(cases))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    done = subprocess.run(
        [str(CLI_PYTHON), str(DRIVER), str(base / "cases.json")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return base, dict(zip(keys, json.loads(done.stdout), strict=True))


def _cli_key(key: str | None) -> str | None:
    if not key:
        return None
    return "azure" if key.startswith(AZURE_KEY) else key


def _azbai(path: Path, scenario: str, config_dir: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from azbai.convert import build_plan
    from azbai.source.reader import load_job

    flags, env, _section = SCENARIOS[scenario]
    for name in ("AZURE_BATCHAI_STORAGE_ACCOUNT", "AZURE_BATCHAI_STORAGE_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**env, "AZURE_CONFIG_DIR": config_dir}.items():
        monkeypatch.setenv(name, value)
    storage = StorageAccount.resolve(flags.get("name"), flags.get("key"))
    service_refused = False
    try:
        loaded = load_job(path, storage=storage)
    except SpecError as exc:
        errors = [d for d in exc.diagnostics if d.is_error]
        if not all(_service_rule(d) for d in errors):
            return {"ok": False, "error": "; ".join(str(d) for d in errors)}
        # a fragment the service refused (the CLI sent it): its mounts still read as the CLI read them
        service_refused = True
        loaded = load_job(path, storage=storage, text=_completed(path))
    except AzbaiError as exc:
        return {"ok": False, "error": str(exc).splitlines()[0]}
    codes = {d.code for d in loaded.diagnostics}
    plan = build_plan(loaded, None, SourceOptions().plan_options())
    job = plan.job_steps[0].job
    references = {r.name: r for r in plan.data_references}
    stores = {d.name: d for d in plan.datastores}
    mounted = {
        v.relative_mount_path: stores[references[v.data_reference].datastore].account_name
        for v in job.volumes
        if v.data_reference
    }

    def key(ref: Any) -> str | None:
        credentials = ref.credentials
        if (
            credentials is not None
            and credentials.account_key is not None
            and credentials.account_key.reveal()
        ):
            return credentials.account_key.reveal()
        where = loaded.path_of(ref)
        if any(d.path.startswith(where) and "from Azure" in d.message for d in loaded.diagnostics):
            return "azure"
        return None

    volumes = loaded.properties.mount_volumes
    shares = [
        {"path": s.relative_mount_path, "accountName": s.account_name, "url": s.azure_file_url, "key": key(s),
         "mounted": mounted.get(s.relative_mount_path)}
        for s in (volumes.azure_file_shares if volumes else ())
    ]  # fmt: skip
    blobs = [
        {
            "path": b.relative_mount_path,
            "accountName": b.account_name,
            "container": b.container_name,
            "key": key(b),
        }
        for b in (volumes.azure_blob_file_systems if volumes else ())
    ]
    unresolved = bool(codes & {"unresolved-placeholder", "unresolved-key"})
    return {
        "ok": True,
        "unresolved": unresolved,
        "shares": shares,
        "blobs": blobs,
        "service_refused": service_refused,
    }


def _service_rule(diagnostic: Diagnostic) -> bool:
    """An error the Batch AI service raised, not the CLI: a fragment of a job, without toolkit or output prefix."""
    return diagnostic.code == "no-toolkit" or (
        diagnostic.code == "missing-key" and "the Batch AI service required it" in diagnostic.message
    )


def _completed(path: Path) -> str:
    data = json.loads(path.read_text())
    props = data.setdefault("properties", {})
    props.setdefault("stdOutErrPathPrefix", "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs")
    if not any(k.endswith("Settings") and k != "containerSettings" for k in props):
        props["customToolkitSettings"] = {"commandLine": "true"}
    return json.dumps(data)


def _agree(cli: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """How azbai differs from the CLI (empty: they agree)."""
    if not cli["ok"]:
        if cli["error"].startswith("CLIError") and any(m in cli["error"] for m in MISSING):
            # the CLI refused for want of an account or key; azbai reads on and says which is missing
            if ours["ok"] and ours["unresolved"]:
                return []
            if not ours["ok"] and "accountName" in ours["error"] and "Ill-formed" in cli["error"]:
                return []
            return [f"CLI: {cli['error']}; azbai: {ours}"]
        return [] if not ours["ok"] else [f"CLI refused ({cli['error']}); azbai accepted"]
    if not ours["ok"]:
        return [f"CLI accepted; azbai refused: {ours['error']}"]
    problems: list[str] = []
    if ours["unresolved"]:
        problems.append("azbai says an account or key is missing; the CLI had them")
    for mine, theirs in zip(ours["shares"], cli["shares"], strict=True):
        url_account = parse_file_share_url(theirs["url"])
        expected = {"path": theirs["path"], "accountName": theirs["accountName"], "url": theirs["url"],
                    "key": _cli_key(theirs["key"]), "mounted": url_account.account if url_account else None}  # fmt: skip
        if mine != expected:
            problems.append(f"share: CLI {expected}, azbai {mine}")
    for mine, theirs in zip(ours["blobs"], cli["blobs"], strict=True):
        expected = {**theirs, "key": _cli_key(theirs["key"])}
        if mine != expected:
            problems.append(f"container: CLI {expected}, azbai {mine}")
    return problems


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_azbai_reads_every_corpus_file_as_the_batch_ai_cli_did(
    scenario: str,
    cli_results: tuple[Path, dict[tuple[str, str], dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, results = cli_results
    disagreements = {}
    fragments = 0
    for path in FILES:
        ours = _azbai(path, scenario, str(base / scenario), monkeypatch)
        fragments += bool(ours.get("service_refused"))
        problems = _agree(results[(str(path), scenario)], ours)
        if problems:
            disagreements[corpus_id(path) if "corpus" in path.parts else path.name] = problems
    agreed = len(FILES) - len(disagreements)
    cli = [results[(str(p), scenario)] for p in FILES]
    missing = sum(1 for r in cli if not r["ok"] and any(m in r["error"] for m in MISSING))
    refused = sum(1 for r in cli if not r["ok"]) - missing
    from_azure = sum(
        1
        for r in cli
        if r["ok"]
        for ref in r["shares"] + r["blobs"]
        if (ref["key"] or "").startswith(AZURE_KEY)
    )
    print(
        f"{scenario}: {agreed}/{len(FILES)} files agree; the CLI sent {len(FILES) - missing - refused}, wanted an "
        f"account or key for {missing}, refused {refused}; {from_azure} mount keys came from Azure; "
        f"{fragments} fragments the service refused"
    )
    assert not disagreements, json.dumps(disagreements, indent=2)[:6000]


def test_the_listed_points_are_in_the_cases() -> None:
    """The differences the CLI and azbai once had are cases here (so the test above covers them)."""
    names = {p.stem for p in CASES}
    assert {
        "placeholder_name_literal_url",
        "two_literal_accounts",
        "empty_credentials",
        "empty_account_key",
        "empty_account_name",
        "numbers_as_strings",
    } <= names
