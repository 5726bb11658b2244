"""Azure Storage names and URLs as Batch AI configs wrote them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

#: the placeholders the Batch AI CLI replaced (catalogue §8.5)
ACCOUNT_PLACEHOLDER = "<AZURE_BATCHAI_STORAGE_ACCOUNT>"
KEY_PLACEHOLDER = "<AZURE_BATCHAI_STORAGE_KEY>"

_ACCOUNT_RE = re.compile(r"^[a-z0-9]{3,24}$")
_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")


@dataclass(frozen=True)
class FileShareUrl:
    """The parts of an ``azureFileUrl``: ``https://<account>.file.<endpoint suffix>/<share>[/<directory>]``."""

    account: str
    share: str
    directory: str
    endpoint_suffix: str
    had_query: bool


def parse_file_share_url(url: str) -> FileShareUrl | None:
    """Split an Azure Files URL; None when it is not one. A query string (a SAS token?) is noted, not kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("https", "http") or not parts.netloc:
        return None
    # the placeholder host "<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net" is not a valid hostname for
    # urlsplit's .hostname, so the netloc is split by hand
    host = parts.netloc.rsplit("@", 1)[-1]
    account, dot, rest = host.partition(".")
    service, dot2, suffix = rest.partition(".")
    if not dot or not dot2 or service.lower() != "file" or not account:
        return None
    suffix = suffix.split(":", 1)[0]
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        return None
    return FileShareUrl(account, segments[0], "/".join(segments[1:]), suffix, bool(parts.query))


def account_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid storage account name, or None. The CLI placeholder is accepted."""
    if name == ACCOUNT_PLACEHOLDER or _ACCOUNT_RE.match(name):
        return None
    return "a storage account name is 3-24 lowercase letters and digits"


def container_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid blob container or file share name, or None."""
    if _CONTAINER_RE.match(name):
        return None
    return "a container or share name is 3-63 lowercase letters, digits and single hyphens, starting with a letter or digit"
