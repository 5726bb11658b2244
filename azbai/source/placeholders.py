"""The Batch AI CLI's storage placeholder substitution, exactly where the CLI did it (catalogue §8.5).

``az batchai job create`` (azure-cli-batchai 0.4.10, ``custom.py``) replaced ``<AZURE_BATCHAI_STORAGE_ACCOUNT>`` and
``<AZURE_BATCHAI_STORAGE_KEY>`` only in ``mountVolumes`` (job and cluster), and filled in a missing or empty
``accountName`` (from the share URL) and missing or empty ``credentials``. Anywhere else the placeholders stayed
literal. The effective account came from one place, name and key together:

1. ``--storage-account-name`` (with ``--storage-account-key``; without it the CLI asked Azure for the account's key,
   and a ``--storage-account-key`` without a name was not used);
2. else, each of the two on its own, the ``AZURE_BATCHAI_STORAGE_ACCOUNT`` / ``AZURE_BATCHAI_STORAGE_KEY``
   environment variables, then ``storage_account`` / ``storage_key`` of the ``[batchai]`` section of the az
   configuration file (``$AZURE_CONFIG_DIR/config``, default ``~/.azure/config``).

A share or container of another account, without a key, got its key from Azure (the CLI listed the account's
keys). azbai cannot: it says so and leaves the key to the time the job runs or the pipeline is submitted.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from azbai.source.diagnostics import Collector
from azbai.source.fields import Secret
from azbai.source.model import (
    AzureBlobFileSystemReference,
    AzureFileShareReference,
    MountVolumes,
    StorageCredentials,
)
from azbai.source.storage_names import ACCOUNT_PLACEHOLDER, KEY_PLACEHOLDER, parse_file_share_url
from azbai.source.walker import Walker

ACCOUNT_ENV = "AZURE_BATCHAI_STORAGE_ACCOUNT"
KEY_ENV = "AZURE_BATCHAI_STORAGE_KEY"
CONFIG_DIR_ENV = "AZURE_CONFIG_DIR"
#: the CLI's messages when it needed an account (or key) it did not have
MSG_CONFIGURE_STORAGE_ACCOUNT = (
    "Please configure Azure Storage account name via AZURE_BATCHAI_STORAGE_ACCOUNT or provide storage_account value "
    "in batchai section of your az configuration file."
)
MSG_CONFIGURE_STORAGE_KEY = (
    "Please configure Azure Storage account key via AZURE_BATCHAI_STORAGE_KEY or provide storage_key value in "
    "batchai section of your az configuration file."
)


@dataclass(frozen=True)
class StorageAccount:
    """The effective storage account the CLI would have used; the key is a :class:`Secret`.

    ``key_from_azure``: the name came from ``--storage-account-name`` without a key, so the CLI fetched the key from
    Azure (azbai leaves it to run time).
    """

    name: str | None = None
    key: Secret | None = None
    key_from_azure: bool = False

    @classmethod
    def resolve(
        cls, name: str | None = None, key: str | None = None, environ: Mapping[str, str] | None = None
    ) -> StorageAccount:
        """The CLI's order: the flags (name and key together), else for each of the two its environment
        variable, then the ``[batchai]`` section of the az configuration file."""
        env = os.environ if environ is None else environ
        if name:
            return cls(name, Secret(key) if key else None, key_from_azure=not key)
        config = _az_config(env)
        found_name = env.get(ACCOUNT_ENV) or config.get("storage_account") or None
        found_key = env.get(KEY_ENV) or config.get("storage_key") or None
        return cls(found_name, Secret(found_key) if found_key else None)


def az_config_path(environ: Mapping[str, str] | None = None) -> str:
    """The az configuration file: ``$AZURE_CONFIG_DIR/config``, default ``~/.azure/config``."""
    env = os.environ if environ is None else environ
    directory = env.get(CONFIG_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".azure")
    return os.path.join(os.path.expanduser(directory), "config")


def _az_config(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``[batchai]`` section of the az configuration file (empty when there is none or it does not parse)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(az_config_path(environ), encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {}  # the az CLI refused such a file too; the placeholders then stay unresolved, with a warning
    return dict(parser["batchai"]) if parser.has_section("batchai") else {}


def substitute(
    volumes: MountVolumes, account: StorageAccount, walker: Walker, collector: Collector
) -> MountVolumes:
    """Return ``volumes`` with the placeholders replaced as the CLI replaced them."""
    shares = tuple(_share(s, account, walker, collector) for s in volumes.azure_file_shares)
    blobs = tuple(_blob(b, account, walker, collector) for b in volumes.azure_blob_file_systems)
    return dataclasses.replace(volumes, azure_file_shares=shares, azure_blob_file_systems=blobs)


def _share(
    share: AzureFileShareReference, account: StorageAccount, walker: Walker, collector: Collector
) -> AzureFileShareReference:
    path = walker.path_of(share)
    name = share.account_name
    if not name:
        parsed = parse_file_share_url(share.azure_file_url)
        name = parsed.account if parsed else None
        if share.account_name == "":
            collector.warning(
                path + ".accountName",
                "cli-tolerance",
                "accountName is empty: the Batch AI CLI took the account from azureFileUrl, and so does azbai",
            )
    if name == ACCOUNT_PLACEHOLDER:
        name = _account_name(account, path + ".accountName", collector)
    url = share.azure_file_url
    if ACCOUNT_PLACEHOLDER in url and account.name:
        url = url.replace(ACCOUNT_PLACEHOLDER, account.name)
    credentials = _credentials(share.credentials, name, account, path, collector)
    new = dataclasses.replace(share, account_name=name, azure_file_url=url, credentials=credentials)
    walker.alias(new, share)
    return new


def _blob(
    blob: AzureBlobFileSystemReference, account: StorageAccount, walker: Walker, collector: Collector
) -> AzureBlobFileSystemReference:
    path = walker.path_of(blob)
    name: str | None = blob.account_name
    if name == ACCOUNT_PLACEHOLDER:
        name = _account_name(account, path + ".accountName", collector)
    credentials = _credentials(blob.credentials, name, account, path, collector)
    new = dataclasses.replace(blob, account_name=name or ACCOUNT_PLACEHOLDER, credentials=credentials)
    walker.alias(new, blob)
    return new


def _account_name(account: StorageAccount, path: str, collector: Collector) -> str:
    if account.name:
        return account.name
    collector.warning(
        path,
        "unresolved-placeholder",
        f"{ACCOUNT_PLACEHOLDER} is not resolved: pass --storage-account-name or set {ACCOUNT_ENV} "
        "(the generated code asks for it when it runs)",
    )
    return ACCOUNT_PLACEHOLDER


def _credentials(
    credentials: StorageCredentials | None,
    name: str | None,
    account: StorageAccount,
    path: str,
    collector: Collector,
) -> StorageCredentials | None:
    """The credentials the CLI sent for one share or container, in the CLI's order (see the module docstring)."""
    key = credentials.account_key.reveal() if credentials and credentials.account_key is not None else None
    if credentials is not None and key == KEY_PLACEHOLDER:
        if account.key is None:
            collector.warning(
                path + ".credentials.accountKey",
                "key-from-azure" if account.key_from_azure else "unresolved-placeholder",
                f"{KEY_PLACEHOLDER} is not resolved: "
                + (
                    "the Batch AI CLI fetched the key of --storage-account-name from Azure; give it through "
                    f"{KEY_ENV} when you run the job or submit the pipeline"
                    if account.key_from_azure
                    else f"pass --storage-account-key or set {KEY_ENV} when you run the job or submit the pipeline"
                ),
            )
            return None
        return dataclasses.replace(credentials, account_key=account.key)
    if credentials is None and name is not None and name == account.name:
        if account.key is not None:
            return StorageCredentials(account_key=account.key)
        _key_later(account, name, path, collector)
        return None
    if credentials is not None and (key or credentials.account_key_secret_reference is not None):
        if key:
            collector.warning(
                path + ".credentials.accountKey",
                "inline-key",
                f"a storage key is written in the file; azbai never copies it: give it through {KEY_ENV} when "
                "the job runs or the pipeline is submitted",
            )
        return credentials
    if credentials is not None:
        what = '"accountKey" is empty' if key == "" else '"credentials" is empty'
        collector.warning(
            path + ".credentials",
            "cli-tolerance",
            f"{what}: the Batch AI CLI fetched the key of '{name}' from Azure; azbai leaves it to the time the "
            f"job runs or the pipeline is submitted ({KEY_ENV})",
        )
        return None
    if name is not None and name != ACCOUNT_PLACEHOLDER:
        collector.warning(
            path + ".credentials",
            "key-from-azure",
            f"no key for '{name}': the Batch AI CLI fetched it from Azure; azbai leaves it to the time the job runs "
            f"or the pipeline is submitted ({KEY_ENV})",
        )
    return None


def _key_later(account: StorageAccount, name: str, path: str, collector: Collector) -> None:
    if account.key_from_azure:
        collector.warning(
            path + ".credentials",
            "key-from-azure",
            f"no key for '{name}' (--storage-account-name without --storage-account-key): the Batch AI CLI fetched "
            f"it from Azure; azbai leaves it to the time the job runs or the pipeline is submitted ({KEY_ENV})",
        )
    else:
        collector.warning(
            path + ".credentials",
            "unresolved-key",
            f"no key for '{name}': the Batch AI CLI asked for {KEY_ENV} (or storage_key in the [batchai] section "
            "of the az configuration file); give it when the job runs or the pipeline is submitted",
        )
