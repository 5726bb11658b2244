"""The Batch AI CLI's storage placeholder substitution, exactly where the CLI did it (catalogue §8.5).

``az batchai job create`` replaced ``<AZURE_BATCHAI_STORAGE_ACCOUNT>`` and ``<AZURE_BATCHAI_STORAGE_KEY>`` only in
``mountVolumes`` (job and cluster), taking the name and key from ``--storage-account-name/--storage-account-key`` or
from the ``AZURE_BATCHAI_STORAGE_ACCOUNT`` / ``AZURE_BATCHAI_STORAGE_KEY`` environment variables, and filled in a
missing ``accountName`` (from the share URL) and missing ``credentials`` (the effective key). Anywhere else the
placeholders stayed literal.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class StorageAccount:
    """The effective storage account the CLI would have used; the key is a :class:`Secret`."""

    name: str | None = None
    key: Secret | None = None

    @classmethod
    def resolve(
        cls, name: str | None = None, key: str | None = None, environ: Mapping[str, str] | None = None
    ) -> StorageAccount:
        """Flags first, then ``AZURE_BATCHAI_STORAGE_ACCOUNT`` / ``AZURE_BATCHAI_STORAGE_KEY``."""
        env = os.environ if environ is None else environ
        name = name or env.get(ACCOUNT_ENV) or None
        key = key or env.get(KEY_ENV) or None
        return cls(name, Secret(key) if key else None)


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
    if name is None:
        parsed = parse_file_share_url(share.azure_file_url)
        name = parsed.account if parsed else None
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
    if credentials is not None and credentials.account_key is not None:
        if credentials.account_key.reveal() == KEY_PLACEHOLDER:
            if account.key is None:
                collector.warning(
                    path + ".credentials.accountKey",
                    "unresolved-placeholder",
                    f"{KEY_PLACEHOLDER} is not resolved: pass --storage-account-key or set {KEY_ENV} when you "
                    "run the job or submit the pipeline",
                )
                return None
            return dataclasses.replace(credentials, account_key=account.key)
        collector.warning(
            path + ".credentials.accountKey",
            "inline-key",
            f"a storage key is written in the file; azbai never copies it: give it through {KEY_ENV} when the "
            "job runs or the pipeline is submitted",
        )
        return credentials
    if credentials is None and name is not None and name == account.name and account.key is not None:
        return StorageCredentials(account_key=account.key)
    return credentials
