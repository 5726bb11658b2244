"""Stores: a blob container or a file share of one storage account, behind one small interface.

:class:`Store` is the interface (fsspec-style: a few verbs over POSIX paths); :class:`BlobStore` keeps a container in
the Azurite emulator and :class:`ShareStore` keeps a share as a plain directory ``<workspace>/shares/<account>/<share>/``
(Azurite has no Azure Files service). :func:`open_store` picks one through a registry of implementations.

Paths are relative POSIX paths (``data/train/0001.png``); absolute paths and ``.``, ``..`` or empty segments are
rejected, so nothing can escape its container or share. Every entry carries its size and MD5 (hex): blobs keep it as
their ``Content-MD5``, shares in an index next to (never inside) the share directory, trusted while a file's size,
mtime and inode are unchanged.

``url_for`` names what a path is, in a form you can use: ``http://127.0.0.1:PORT/ACCOUNT/CONTAINER/PATH`` for a blob
(the URL the SDK uses; percent-encoded) and ``file:///…/shares/ACCOUNT/SHARE/PATH`` for a share file.

Integrity: uploads to Azurite send the MD5 and the emulator checks it (``Md5Mismatch`` otherwise; blocks of large
blobs are checked one by one); downloads land in a part file beside the target (unnamed until it is put in place,
or a named ``.azbai-*.part`` where the file system cannot), are hashed (as they are written, or with other files'
by a transfer's :class:`~azbai.local.digests.Md5Batcher`: :meth:`Store.start_download`) and replace the target only
when the hash matches the recorded MD5.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, BinaryIO, ClassVar, cast
from urllib.parse import quote, unquote

from azbai.errors import StorageError, TransferError
from azbai.fsutil import create_new
from azbai.local.azurite import Emulator, check_account_name
from azbai.local.workspace import Workspace

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from azure.storage.blob import BlobServiceClient, ContainerClient

    from azbai.local.digests import Md5Batcher

log = logging.getLogger(__name__)

#: Files azbai writes beside user data (MD5 caches, a download's temporary file) start with this.
AZBAI_FILE_PREFIX = ".azbai-"
_PART_SUFFIX = ".part"
_PART_PREFIX = f"{AZBAI_FILE_PREFIX}dl-"
_PART_RE = re.compile(r"\.azbai-dl-[A-Za-z0-9_]{8}\.part")


def _is_part_file(name: str) -> bool:
    """A download's temporary file (8 random characters: hex now, ``tempfile.mkstemp``'s alphabet before)."""
    return _PART_RE.fullmatch(name) is not None


_CHUNK = 1 << 20
#: Up to this size a file is read into memory and sent in one request.
SMALL_UPLOAD = 8 << 20
#: Files from this size up to SMALL_UPLOAD are hashed by a transfer's Md5Batcher, with other files; below it the
#: MD5 costs less than handing the bytes over (a 20 KB file: 0.02 ms).
BATCHED_MD5_MIN = 256 << 10
_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


# -- names and paths -----------------------------------------------------------------------------------------------


def check_container_name(name: str, what: str = "container") -> str:
    """Return ``name`` if it is a valid container (or share) name: 3-63 lowercase letters, digits, single hyphens."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise StorageError(
            f"invalid {what} name {name!r}: expected 3-63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit, with no two hyphens in a row"
        )
    return name


def check_path(path: str) -> str:
    """Return ``path`` if it is a relative POSIX path that stays inside its store, else raise StorageError."""
    if not isinstance(path, str) or not path:
        raise StorageError("a store path must be a non-empty string")
    if "\0" in path:
        raise StorageError(f"invalid path {path!r}: it contains a NUL character")
    if path.startswith("/") or re.match(r"[A-Za-z]:[\\/]", path):
        raise StorageError(f"invalid path {path!r}: expected a relative path, found an absolute one")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise StorageError(f"invalid path {path!r}: '.', '..' and empty segments are not allowed")
    if len(path) > 1024:
        raise StorageError(f"invalid path {path[:40]!r}…: longer than 1024 characters")
    return path


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` (a string prefix of paths, possibly ending in ``/``) if it cannot escape the store."""
    if prefix:
        check_path(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def file_md5(path: str | os.PathLike[str]) -> str:
    """The MD5 (hex) of a local file."""
    digest = hashlib.md5(usedforsecurity=False)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()


def bytes_md5(data: bytes) -> str:
    """The MD5 (hex) of ``data``."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One file of a store: its path, size in bytes and MD5 (hex; ``None`` when the store does not know it)."""

    path: str
    size: int
    md5: str | None


# -- local files ---------------------------------------------------------------------------------------------------


class Md5Cache:
    """MD5s of local files by key (a relative path), trusted while size, mtime_ns and inode are unchanged.

    Kept in memory and written to ``path`` (JSON) by :meth:`save`; ``path=None`` keeps it in memory only. A damaged
    or missing file is an empty cache. Thread-safe.
    """

    VERSION = 1

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, tuple[int, int, int, str]] | None = None
        self._dirty = False
        self._lock = threading.Lock()

    def _load(self) -> dict[str, tuple[int, int, int, str]]:
        if self._entries is None:
            self._entries = {}
            if self.path is not None:
                try:
                    data = json.loads(self.path.read_text())
                    if data.get("version") == self.VERSION:
                        self._entries = {
                            k: (int(v[0]), int(v[1]), int(v[2]), str(v[3])) for k, v in data["files"].items()
                        }
                except FileNotFoundError:
                    pass
                except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                    log.debug("ignoring unreadable MD5 cache %s: %s", self.path, exc)
        return self._entries

    def get(self, key: str, st: os.stat_result) -> str | None:
        """The cached MD5 of ``key`` if the file still has the size, mtime and inode in ``st``."""
        with self._lock:
            hit = self._load().get(key)
        if hit is not None and hit[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            return hit[3]
        return None

    def put(self, key: str, st: os.stat_result, md5: str) -> None:
        """Remember that the file ``key`` with this ``st`` has MD5 ``md5``."""
        with self._lock:
            self._load()[key] = (st.st_size, st.st_mtime_ns, st.st_ino, md5)
            self._dirty = True

    def discard(self, key: str) -> None:
        """Forget ``key``."""
        with self._lock:
            if self._load().pop(key, None) is not None:
                self._dirty = True

    def prune(self, keep: set[str]) -> None:
        """Forget every key not in ``keep``."""
        with self._lock:
            entries = self._load()
            for key in [k for k in entries if k not in keep]:
                del entries[key]
                self._dirty = True

    def save(self) -> None:
        """Write the cache if it changed (atomically; a failure only costs re-hashing later)."""
        with self._lock:
            if not self._dirty or self.path is None or self._entries is None:
                return
            payload = {
                "version": self.VERSION,
                "files": {k: list(v) for k, v in sorted(self._entries.items())},
            }
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(payload, separators=(",", ":")))
                os.replace(tmp, self.path)
                self._dirty = False
            except OSError as exc:
                log.warning("cannot write the MD5 cache %s: %s", self.path, exc)
                with contextlib.suppress(OSError):
                    tmp.unlink()


class PartFile:
    """A temporary file beside ``target``: :meth:`commit` puts it in place as the target; leaving the ``with`` block
    without committing discards it. So a target is either absent, its old self, or complete.

    On Linux the file has no name until the commit (``O_TMPFILE``, then linked in as the target): no listing sees
    it, and a process killed mid-write leaves nothing behind. Elsewhere, or where the file system cannot do that,
    it is a ``.azbai-dl-*.part`` file renamed over the target.
    """

    #: False once a file system has refused O_TMPFILE (then every part file is a named one)
    _anonymous_ok: ClassVar[bool] = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target
        self._file: BinaryIO | None = None
        self._anonymous = False
        self._committed = False

    @property
    def file(self) -> BinaryIO:
        """The open temporary file."""
        assert self._file is not None, "PartFile used outside its with block"
        return self._file

    def __enter__(self) -> PartFile:
        # The folder usually exists (the other files of a download share it): try first, create it when missing,
        # rather than pay a mkdir that fails with EEXIST (an exception and a stat in pathlib) for every file.
        try:
            fd = self._create()
        except FileNotFoundError:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd = self._create()
        self._file = os.fdopen(fd, "wb")
        return self

    def _create(self) -> int:
        if PartFile._anonymous_ok:
            try:
                fd = os.open(self.target.parent, os.O_TMPFILE | os.O_WRONLY, 0o666)
            except OSError as exc:
                # EISDIR: a kernel without O_TMPFILE opens the folder itself (O_TMPFILE includes O_DIRECTORY)
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.EISDIR):
                    raise
                PartFile._anonymous_ok = False  # this file system (or kernel) has no O_TMPFILE
            else:
                self._anonymous = True
                self.path = Path(f"/proc/self/fd/{fd}")  # the file's contents, while it is open
                return fd
        fd, self.path = create_new(self.target.parent, _PART_PREFIX, _PART_SUFFIX)
        return fd

    def commit(self) -> None:
        """Close the temporary file and put it in place as the target."""
        if self._anonymous:
            self.file.flush()
            self._link_in()
            self.file.close()
        else:
            self.file.close()
            os.replace(self.path, self.target)
        self._committed = True

    def _link_in(self) -> None:
        try:
            _link_open_file(self.file.fileno(), self.target)
            return
        except FileExistsError:
            pass
        except OSError:
            # linkat through /proc refused here (a restricted /proc, say): named part files from now on, and this
            # one fails (its transfer is retried once, with a named part file)
            PartFile._anonymous_ok = False
            raise
        # a link never replaces: link it under a temporary name, then rename that over the old target
        while True:
            temporary = self.target.with_name(f"{_PART_PREFIX}{os.urandom(4).hex()}{_PART_SUFFIX}")
            try:
                _link_open_file(self.file.fileno(), temporary)
                break
            except FileExistsError:
                continue
        try:
            os.replace(temporary, self.target)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        if not self._committed and not self._anonymous:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


_PROC_FD: list[tuple[int, int]] = []  # (pid, descriptor of /proc/self/fd), opened once per process
_PROC_FD_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # a fork while another thread held the lock must not leave it held
    os.register_at_fork(after_in_child=lambda: globals().update(_PROC_FD_LOCK=threading.Lock()))


def _link_open_file(fd: int, target: Path) -> None:
    """Give the open, unnamed (``O_TMPFILE``) file ``fd`` the name ``target`` (linkat through /proc/self/fd).

    /proc/self/fd is opened once per process: "self" is resolved when it is opened, so a descriptor inherited
    across a fork names the parent's files, and the child opens its own.
    """
    with _PROC_FD_LOCK:
        if not _PROC_FD or _PROC_FD[0][0] != os.getpid():
            if _PROC_FD:  # the parent's, inherited across a fork
                os.close(_PROC_FD.pop()[1])
            _PROC_FD.append(
                (os.getpid(), os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            )
        proc_fd = _PROC_FD[0][1]
    os.link(str(fd), target, src_dir_fd=proc_fd, follow_symlinks=True)


class _HashingWriter:
    """A seekable write-only stream over a file that hashes what is written in order (and notices when it is not).

    With ``keep``, a first write of everything at once (a blob that came in one response) is kept as :attr:`kept`
    instead of hashed, for a batch of MD5s; any further write hashes it after all.
    """

    def __init__(self, handle: BinaryIO, *, keep: bool = False) -> None:
        self._handle = handle
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._pos = 0
        self._hashed = 0
        self._in_order = True
        self._keep = keep
        self.kept: bytes | memoryview | None = None
        self.written = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._handle.seek(offset, whence)
        return self._pos

    def write(self, data: bytes) -> int:
        n = self._handle.write(data)
        if self.kept is not None:  # a second write: hash the first after all
            self._md5.update(self.kept)
            self.kept = None
        if self._keep and self.written == 0 and self._pos == 0:
            self.kept = memoryview(data)[:n]
            self._hashed = n
        elif self._in_order and self._pos == self._hashed:
            self._md5.update(memoryview(data)[:n])
            self._hashed += n
        else:
            self._in_order = False
        self._keep = False
        self._pos += n
        self.written += n
        return n

    def hexdigest(self, path: Path) -> str:
        """The MD5 of the file (re-read from ``path`` when the writes came out of order)."""
        self._handle.flush()
        if self.kept is not None:
            self._md5.update(self.kept)
            self.kept = None
        if self._in_order and self._hashed == self._pos:
            return self._md5.hexdigest()
        return file_md5(path)


def copy_hashing(source: str | os.PathLike[str], destination: BinaryIO) -> tuple[str, int]:
    """Copy a local file into an open stream; return the MD5 (hex) and size of exactly the bytes written."""
    digest = hashlib.md5(usedforsecurity=False)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    size = 0
    with open(source, "rb", buffering=0) as handle:
        while n := handle.readinto(view):
            digest.update(view[:n])
            destination.write(view[:n])
            size += n
    return digest.hexdigest(), size


# -- the interface -------------------------------------------------------------------------------------------------


class Store(ABC):
    """A blob container or a file share of one storage account.

    Missing files and invalid names raise :class:`~azbai.errors.StorageError`; a transfer that fails or does not
    verify raises :class:`~azbai.errors.TransferError`. Implementations are safe to use from several threads.
    """

    kind: ClassVar[str]
    """The registry key: ``"blob"`` or ``"share"``."""

    def __init__(self, account: str, name: str) -> None:
        self.account = check_account_name(account)
        self.name = name

    @classmethod
    @abstractmethod
    def open(cls, workspace: Workspace, account: str, name: str) -> Store:
        """The store ``name`` of ``account`` in ``workspace`` (it need not exist yet)."""

    @abstractmethod
    def root_exists(self) -> bool:
        """Whether the container or share exists (uploads create it)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[Entry]:
        """Every file whose path starts with ``prefix`` (a plain string prefix, as Azure's), sorted by path."""

    @abstractmethod
    def info(self, path: str) -> Entry:
        """The entry of one file."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether the file exists."""

    @abstractmethod
    def upload_file(self, local: str | os.PathLike[str], path: str) -> Entry:
        """Store a local file as ``path`` (replacing it), with its MD5; return what was stored."""

    @abstractmethod
    def download_file(self, path: str, local: str | os.PathLike[str]) -> Entry:
        """Write ``path`` to a local file, atomically, after checking its MD5; return what was read."""

    def start_download(self, path: str, local: str | os.PathLike[str], digests: Md5Batcher) -> Future[Entry]:
        """:meth:`download_file`, whose MD5 ``digests`` may compute together with other files': the future gives
        what download_file returns, or raises what it raises. Stores that cannot hand the hashing over download
        (and verify) here, in the calling thread, and return a resolved future."""
        future: Future[Entry] = Future()
        future.set_result(self.download_file(path, local))
        return future

    @abstractmethod
    def delete(self, path: str, *, missing_ok: bool = False) -> None:
        """Delete a file."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """The content of a file (checked against its MD5)."""

    @abstractmethod
    def write_bytes(self, path: str, data: bytes) -> Entry:
        """Store ``data`` as ``path`` (replacing it)."""

    def put_bytes(self, path: str, data: bytes | memoryview, md5: str) -> Entry:
        """:meth:`write_bytes` of ``data`` (bytes, or a view of them) whose MD5 (hex) the caller has computed: a
        store that checks it (a blob upload sends it as the Content-MD5, and the service refuses other bytes) uses
        it; this default hashes ``data`` again."""
        return self.write_bytes(path, data)

    @abstractmethod
    def url_for(self, path: str = "") -> str:
        """Where ``path`` lives, as a URL (see the module docstring)."""

    def flush(self) -> None:  # noqa: B027 - optional hook, a no-op unless a store caches metadata
        """Persist cached metadata (a no-op unless the store keeps some)."""

    def close(self) -> None:
        """Flush and release resources; the store stays usable."""
        self.flush()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url_for()!r})"


_REGISTRY: dict[str, type[Store]] = {}


def register_store(cls: type[Store]) -> type[Store]:
    """Class decorator: make ``cls`` available to :func:`open_store` under ``cls.kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


def open_store(
    workspace: Workspace, account: str, container: str | None = None, share: str | None = None
) -> Store:
    """The blob ``container`` or the file ``share`` of ``account`` (exactly one of the two)."""
    if (container is None) == (share is None):
        raise StorageError("name exactly one of a container or a share")
    kind, name = ("blob", container) if container is not None else ("share", share)
    return _REGISTRY[kind].open(workspace, account, cast(str, name))


# -- blob containers in Azurite ------------------------------------------------------------------------------------


@register_store
class BlobStore(Store):
    """A blob container of an account in the workspace's Azurite emulator."""

    kind = "blob"

    def __init__(self, service: BlobServiceClient, container: str, *, max_concurrency: int = 4) -> None:
        super().__init__(service.account_name or "", check_container_name(container))
        self.max_concurrency = max_concurrency
        #: Blobs per List Blobs request; ``None`` is the service's maximum (5,000). Smaller pages are for tests.
        self.list_page_size: int | None = None
        self._client = service.get_container_client(container)

    @classmethod
    def open(cls, workspace: Workspace, account: str, name: str) -> BlobStore:
        """Start (or reuse) the emulator with ``account`` and return the container ``name``."""
        check_account_name(account)
        check_container_name(name)
        return cls(Emulator(workspace).blob_service(account), name)

    def url_for(self, path: str = "") -> str:
        """``http://127.0.0.1:PORT/ACCOUNT/CONTAINER/PATH``."""
        return f"{self._client.url}/{quote(path, safe='/~')}" if path else self._client.url

    def root_exists(self) -> bool:
        from azure.core.exceptions import AzureError

        try:
            return bool(self._client.exists())
        except AzureError as exc:
            raise self._error(exc, "", "checking") from exc

    def list(self, prefix: str = "") -> list[Entry]:
        from azure.core.exceptions import AzureError

        check_prefix(prefix)
        try:
            entries = _list_from_xml(self._client, prefix, self.list_page_size)
            if entries is None:
                blobs = self._client.list_blobs(
                    name_starts_with=prefix or None, results_per_page=self.list_page_size
                )
                entries = [Entry(b.name, int(b.size), _hex(b.content_settings.content_md5)) for b in blobs]
        except AzureError as exc:
            raise self._error(exc, prefix, "listing") from exc
        return sorted(entries, key=lambda e: e.path)

    def info(self, path: str) -> Entry:
        from azure.core.exceptions import AzureError

        check_path(path)
        try:
            props = self._client.get_blob_client(path).get_blob_properties()
        except AzureError as exc:
            raise self._error(exc, path, "reading") from exc
        return Entry(path, int(props.size), _hex(props.content_settings.content_md5))

    def exists(self, path: str) -> bool:
        from azure.core.exceptions import AzureError

        check_path(path)
        try:
            return bool(self._client.get_blob_client(path).exists())
        except AzureError as exc:
            raise self._error(exc, path, "checking") from exc

    def upload_file(self, local: str | os.PathLike[str], path: str) -> Entry:
        check_path(path)
        local = Path(local)
        try:
            before = local.stat()
            if before.st_size <= SMALL_UPLOAD:
                data = local.read_bytes()
                return self._put(path, data, bytes_md5(data), len(data))
            digest = file_md5(local)
            with open(local, "rb") as handle:
                entry = self._put(path, handle, digest, before.st_size)
            after = local.stat()
        except OSError as exc:
            raise TransferError(f"cannot read {local}: {exc.strerror or exc}") from exc
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise TransferError(f"{local} changed while it was being uploaded to {self.url_for(path)}")
        return entry

    def write_bytes(self, path: str, data: bytes) -> Entry:
        check_path(path)
        return self._put(path, bytes(data), bytes_md5(data), len(data))

    def put_bytes(self, path: str, data: bytes | memoryview, md5: str) -> Entry:
        """See :meth:`Store.put_bytes`: ``md5`` goes as the Content-MD5, which the emulator checks."""
        check_path(path)
        return self._put(path, data, md5, len(data))

    def download_file(self, path: str, local: str | os.PathLike[str]) -> Entry:
        return self._download(path, Path(local), None).result()

    def start_download(self, path: str, local: str | os.PathLike[str], digests: Md5Batcher) -> Future[Entry]:
        """See :meth:`Store.start_download`: the bytes are fetched and written (to an unnamed part file) here; the
        file is verified and put in place in ``digests``' thread once its MD5 is known. Blobs below
        BATCHED_MD5_MIN or above SMALL_UPLOAD are hashed as they are written, here."""
        return self._download(path, Path(local), digests)

    def _download(self, path: str, local: Path, digests: Md5Batcher | None) -> Future[Entry]:
        from azure.core.exceptions import AzureError

        check_path(path)
        done: Future[Entry] = Future()
        try:
            whole = self._get_whole(path)
            if whole is not None:
                chunks, size, expected = whole
            else:
                downloader = self._client.get_blob_client(path).download_blob(
                    max_concurrency=self.max_concurrency
                )
                expected = _hex(downloader.properties.content_settings.content_md5)
                size = int(downloader.size)
            with contextlib.ExitStack() as owned:
                part = owned.enter_context(PartFile(local))
                batched = digests is not None and BATCHED_MD5_MIN <= size <= SMALL_UPLOAD
                writer = _HashingWriter(part.file, keep=batched)
                if whole is not None:
                    for chunk in chunks:
                        writer.write(chunk)
                else:
                    downloader.readinto(cast("IO[bytes]", writer))
                if batched and writer.kept is not None:
                    assert digests is not None
                    digest_of = digests.submit(writer.kept)
                    owned.pop_all()  # the part file is _finish's now: it stays open past this block
                    digest_of.add_done_callback(
                        lambda digest: self._finish(
                            done, part, path, local, size, writer.written, expected, digest
                        )
                    )
                    return done
                digest = writer.hexdigest(part.path)
                self._verify(path, writer.written, size, digest, expected, f"{local} was left as it was")
                part.commit()
        except AzureError as exc:
            raise self._error(exc, path, "downloading") from exc
        except OSError as exc:
            raise TransferError(f"cannot write {local}: {exc.strerror or exc}") from exc
        done.set_result(Entry(path, size, digest))
        return done

    def _finish(
        self,
        done: Future[Entry],
        part: PartFile,
        path: str,
        local: Path,
        size: int,
        written: int,
        expected: str | None,
        digest: Future[str],
    ) -> None:
        """The end of a handed-over download (in the batcher's thread): verify, put in place, resolve ``done``.

        ``part`` was entered by :meth:`_download`; leaving this ``with`` block closes it (discards it unless
        committed)."""
        try:
            with contextlib.ExitStack() as owned:
                owned.push(part)
                md5 = digest.result()
                self._verify(path, written, size, md5, expected, f"{local} was left as it was")
                part.commit()
        except OSError as exc:
            done.set_exception(TransferError(f"cannot write {local}: {exc.strerror or exc}"))
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(Entry(path, size, md5))

    def read_bytes(self, path: str) -> bytes:
        from azure.core.exceptions import AzureError

        check_path(path)
        try:
            downloader = self._client.get_blob_client(path).download_blob(
                max_concurrency=self.max_concurrency
            )
            data = downloader.readall()
        except AzureError as exc:
            raise self._error(exc, path, "reading") from exc
        expected = _hex(downloader.properties.content_settings.content_md5)
        self._verify(path, len(data), downloader.size, bytes_md5(data), expected, "")
        return data

    def delete(self, path: str, *, missing_ok: bool = False) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        check_path(path)
        try:
            self._client.get_blob_client(path).delete_blob()
        except ResourceNotFoundError as exc:
            if not missing_ok:
                raise self._error(exc, path, "deleting") from exc
        except AzureError as exc:
            raise self._error(exc, path, "deleting") from exc

    def close(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        self._client.close()

    def delete_container(self) -> None:
        """Delete the whole container (if it exists)."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            self._client.delete_container()
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise self._error(exc, "", "deleting") from exc

    # -- internals

    def _own_pipeline(self) -> tuple[Any, str]:
        """The container client's pipeline and service version, or ``(None, "")`` where this SDK version does not
        carry them on the client (both are its own attributes, not public ones)."""
        pipeline, version = (
            getattr(self._client, "_pipeline", None),
            getattr(self._client, "api_version", None),
        )
        return (pipeline, version) if pipeline is not None and isinstance(version, str) else (None, "")

    def _get_whole(self, path: str) -> tuple[Iterator[bytes], int, str | None] | None:
        """One GET of the whole blob sent through the container client's own pipeline (its Shared Key signing,
        retries and pooled transport): the body's chunks (not read yet), its size and its Content-MD5 (hex).

        ``download_blob`` costs twice the client CPU of the request itself (3.7 against 7.3 ms a 1 MB blob here,
        2.9 against 4.5 ms a 20 KB one): it makes a BlobClient, asks for a range, parses every property header into
        a model and copies the body through its chunk bookkeeping. On a 2-core machine where Azurite takes most of
        one core, that CPU is the transfer's time. ``None`` (``download_blob`` then does it, with its errors) where
        this SDK version carries no pipeline on its client, for an answer other than 200, and for a blob over
        SMALL_UPLOAD, which the SDK fetches faster in parallel ranges.
        """
        from azure.core.rest import HttpRequest

        pipeline, version = self._own_pipeline()
        if pipeline is None:
            return None
        request = HttpRequest("GET", self.url_for(path), headers={"x-ms-version": version})
        response = pipeline.run(request, stream=True).http_response
        length = response.headers.get("Content-Length", "")
        if response.status_code != 200 or not length.isdigit() or int(length) > SMALL_UPLOAD:
            response.close()
            return None
        md5 = response.headers.get("Content-MD5")
        return response.stream_download(pipeline), int(length), base64.b64decode(md5).hex() if md5 else None

    def _put_whole(self, path: str, data: bytes | memoryview, digest: str) -> bool:
        """One Put Blob of ``data`` through the container client's own pipeline, as ``upload_blob`` sends it (the
        MD5 as the blob's Content-MD5, which the emulator checks); True once stored. False where this SDK version
        carries no pipeline on its client, or for any answer but 201: ``upload_blob`` then sends it again and
        gives the SDK's error. Half the client CPU of ``upload_blob``, for the reasons in :meth:`_get_whole`."""
        from azure.core.rest import HttpRequest

        pipeline, version = self._own_pipeline()
        if pipeline is None:
            return False
        headers = {
            "x-ms-version": version,
            "x-ms-blob-type": "BlockBlob",
            "x-ms-blob-content-type": "application/octet-stream",
            "x-ms-blob-content-md5": base64.b64encode(bytes.fromhex(digest)).decode(),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
        }
        request = HttpRequest("PUT", self.url_for(path), headers=headers, content=data)
        # not streamed: the (empty) body is read, so that the connection goes back to the pool
        return pipeline.run(request).http_response.status_code == 201

    def _put(self, path: str, data: bytes | memoryview | BinaryIO, digest: str, size: int) -> Entry:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        try:
            if isinstance(data, (bytes, memoryview)) and self._put_whole(path, data, digest):
                return Entry(path, size, digest)
        except AzureError as exc:  # the request itself failed, after the pipeline's retries
            raise self._error(exc, path, "uploading") from exc
        if isinstance(data, memoryview):
            data = data.tobytes()  # upload_blob takes bytes, text, a file or an iterable of chunks
        settings = ContentSettings(
            content_type="application/octet-stream", content_md5=bytearray.fromhex(digest)
        )
        blob = self._client.get_blob_client(path)
        for attempt in (1, 2):
            try:
                # The emulator checks the whole-blob MD5 of a single put; validate_content makes it check each
                # block of a large one too (the whole-blob MD5 is then only recorded).
                blob.upload_blob(
                    data,
                    length=size,
                    overwrite=True,
                    content_settings=settings,
                    max_concurrency=self.max_concurrency,
                    validate_content=size > SMALL_UPLOAD,
                )
                return Entry(path, size, digest)
            except ResourceNotFoundError as exc:
                if attempt == 2 or getattr(exc, "error_code", None) != "ContainerNotFound":
                    raise self._error(exc, path, "uploading") from exc
                try:
                    self._client.create_container()
                except ResourceExistsError:
                    pass
                except AzureError as create_exc:
                    raise self._error(create_exc, "", "creating") from create_exc
                log.info("created container %s", self.url_for())
                if not isinstance(data, bytes):
                    data.seek(0)
            except AzureError as exc:
                raise self._error(exc, path, "uploading") from exc
        raise AssertionError("unreachable")

    def _verify(
        self, path: str, written: int, size: int, digest: str, expected: str | None, note: str
    ) -> None:
        suffix = f"; {note}" if note else ""
        if written != size:
            raise TransferError(f"{self.url_for(path)}: got {written} of {size} bytes{suffix}")
        if expected is None:
            log.warning("%s has no Content-MD5; its download cannot be verified", self.url_for(path))
        elif digest != expected:
            raise TransferError(
                f"{self.url_for(path)}: the downloaded bytes do not match the blob's Content-MD5 "
                f"(got {digest}, expected {expected}){suffix}"
            )

    def _error(self, exc: Exception, path: str, doing: str) -> StorageError:
        """Translate an azure.core exception into a StorageError (TransferError for broken transfers)."""
        from azure.core.exceptions import (
            HttpResponseError,
            IncompleteReadError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        url = self.url_for(path)
        code = getattr(exc, "error_code", None) or ""
        code = str(getattr(code, "value", code))  # the SDK's StorageErrorCode: str() would give its enum name
        if isinstance(exc, ServiceRequestError):
            return StorageError(
                f"{doing} {url}: the storage emulator does not answer (is it running? try `azbai storage status`)"
            )
        if isinstance(exc, (ServiceResponseError, IncompleteReadError)):
            return TransferError(f"{doing} {url}: the connection broke ({_first_line(exc)})")
        if isinstance(exc, ResourceNotFoundError):
            if code == "ContainerNotFound" or not path:
                return StorageError(
                    f"{doing} {url}: container {self.name!r} does not exist in account {self.account!r}"
                )
            return StorageError(f"{doing} {url}: no such blob")
        if isinstance(exc, HttpResponseError) and code == "Md5Mismatch":
            return TransferError(
                f"{doing} {url}: the emulator received bytes whose MD5 differs from the file's"
            )
        return StorageError(f"{doing} {url} failed: {code or type(exc).__name__}: {_first_line(exc)}")


def _list_from_xml(client: ContainerClient, prefix: str, page_size: int | None) -> list[Entry] | None:
    """The listing read straight from the service's XML, or ``None`` when this SDK version hides it.

    ``list_blobs`` turns every blob of a page into a ``BlobProperties`` through the SDK's generic model
    deserializer: 0.54 s for 2,000 blobs against Azurite here, where ``list_blob_names``, which skips it, takes
    0.13 s. ``list_blob_names`` keeps each page's parsed XML on its page iterator, from which the three fields
    azbai needs (name, size, MD5) are read directly: 0.14 s. That attribute (``_response``) is the SDK's own, not
    a public one, hence the fallback: an SDK whose pager does not carry an XML element gets ``list_blobs``. A
    download lists before it transfers anything, so this is wall-clock time of every download and of every
    incremental re-sync (where it is most of the time).
    """
    from xml.etree.ElementTree import Element

    pages = client.list_blob_names(name_starts_with=prefix or None, results_per_page=page_size).by_page()
    entries: list[Entry] = []
    for page in pages:
        names = list(page)
        root = getattr(pages, "_response", None)
        if not isinstance(root, Element):
            return None
        blobs = root.findall("Blobs/Blob")
        if len(blobs) != len(names):
            return None
        try:
            entries.extend(_entry_from_xml(blob) for blob in blobs)
        except ValueError:  # a size or an MD5 this parser does not read: let the SDK's deserializer decide
            return None
    return entries


def _entry_from_xml(blob: Element) -> Entry:
    """An :class:`Entry` from one ``<Blob>`` of a List Blobs response (a name marked ``Encoded`` is percent-encoded,
    as the service does for names that XML cannot carry)."""
    name_node = blob.find("Name")
    name = name_node.text if name_node is not None and name_node.text else ""
    if name_node is not None and name_node.get("Encoded") == "true":
        name = unquote(name)
    size = blob.findtext("Properties/Content-Length")
    md5 = blob.findtext("Properties/Content-MD5")
    return Entry(name, int(size) if size else 0, base64.b64decode(md5).hex() if md5 else None)


def _hex(md5: Any) -> str | None:
    return bytes(md5).hex() if md5 else None


def _first_line(exc: Exception) -> str:
    message = str(getattr(exc, "message", None) or exc)
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__


# -- file shares as directories ------------------------------------------------------------------------------------


@register_store
class ShareStore(Store):
    """An Azure File share kept as a plain directory; MD5s live in an index beside it (or only in memory)."""

    kind = "share"

    def __init__(
        self, root: str | os.PathLike[str], account: str, share: str, *, index: Path | None = None
    ) -> None:
        super().__init__(account, check_container_name(share, "share"))
        self.root = Path(root).absolute()
        self._index = Md5Cache(index)

    @classmethod
    def open(cls, workspace: Workspace, account: str, name: str) -> ShareStore:
        """The share ``name`` of ``account``: ``<workspace>/shares/<account>/<name>/``."""
        check_account_name(account)
        check_container_name(name, "share")
        return cls(
            workspace.share_dir(account, name), account, name, index=workspace.share_index(account, name)
        )

    def url_for(self, path: str = "") -> str:
        """``file:///…/shares/ACCOUNT/SHARE/PATH``."""
        return (self.root / path).as_uri() if path else self.root.as_uri()

    def root_exists(self) -> bool:
        return self.root.is_dir()

    def flush(self) -> None:
        self._index.save()

    def list(self, prefix: str = "") -> list[Entry]:
        check_prefix(prefix)
        if not self.root.is_dir():
            raise StorageError(
                f"listing {self.url_for()}: share {self.name!r} does not exist in account {self.account!r}"
            )
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        entries: list[Entry] = []
        for dirpath, _dirnames, filenames in os.walk(base):
            for filename in filenames:
                if _is_part_file(filename):
                    continue
                full = os.path.join(dirpath, filename)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                if not rel.startswith(prefix):
                    continue
                try:
                    if os.path.islink(full) and not self._inside(Path(full)):
                        log.debug("skipping %s: a link that leads outside the share", full)
                        continue
                    st = os.stat(full)
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    entries.append(Entry(rel, st.st_size, self._md5(rel, full, st)))
                except FileNotFoundError:  # removed while listing, or a dangling link
                    continue
                except OSError as exc:
                    raise StorageError(f"listing {self.url_for(rel)}: {exc.strerror or exc}") from exc
        if not prefix:
            self._index.prune({e.path for e in entries})
        self.flush()
        return sorted(entries, key=lambda e: e.path)

    def info(self, path: str) -> Entry:
        target = self._local(path)
        st = self._stat(target, path, "reading")
        return Entry(path, st.st_size, self._md5(path, str(target), st))

    def exists(self, path: str) -> bool:
        return self._local(path).is_file()

    def upload_file(self, local: str | os.PathLike[str], path: str) -> Entry:
        target = self._local(path)
        try:
            before = os.stat(local)
            with PartFile(target) as part:
                digest, size = copy_hashing(local, part.file)
                if not _unchanged(before, os.stat(local), size):
                    raise TransferError(f"{local} changed while it was being copied to {self.url_for(path)}")
                part.commit()
            self._index.put(path, target.stat(), digest)
        except OSError as exc:
            raise TransferError(f"copying {local} to {self.url_for(path)}: {exc.strerror or exc}") from exc
        return Entry(path, size, digest)

    def write_bytes(self, path: str, data: bytes) -> Entry:
        target = self._local(path)
        try:
            with PartFile(target) as part:
                part.file.write(data)
                part.commit()
            digest = bytes_md5(data)
            self._index.put(path, target.stat(), digest)
        except OSError as exc:
            raise TransferError(f"writing {self.url_for(path)}: {exc.strerror or exc}") from exc
        return Entry(path, len(data), digest)

    def download_file(self, path: str, local: str | os.PathLike[str]) -> Entry:
        source = self._local(path)
        before = self._stat(source, path, "downloading")
        cached = self._index.get(path, before)
        local = Path(local)
        try:
            with PartFile(local) as part:
                digest, size = copy_hashing(source, part.file)
                if not _unchanged(before, os.stat(source), size):
                    raise TransferError(
                        f"{self.url_for(path)} changed while it was being copied; {local} is unchanged"
                    )
                if cached is not None and cached != digest:
                    self._index.discard(path)
                    raise TransferError(
                        f"{self.url_for(path)}: the bytes read do not match the share's recorded MD5 "
                        f"(got {digest}, expected {cached}); {local} was left as it was"
                    )
                part.commit()
        except OSError as exc:
            raise TransferError(f"copying {self.url_for(path)} to {local}: {exc.strerror or exc}") from exc
        if cached is None:
            self._index.put(path, before, digest)
        return Entry(path, size, digest)

    def read_bytes(self, path: str) -> bytes:
        source = self._local(path)
        before = self._stat(source, path, "reading")
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise StorageError(f"reading {self.url_for(path)}: {exc.strerror or exc}") from exc
        cached = self._index.get(path, before)
        if cached is not None and cached != bytes_md5(data):
            self._index.discard(path)
            raise TransferError(f"{self.url_for(path)}: the bytes read do not match the share's recorded MD5")
        return data

    def delete(self, path: str, *, missing_ok: bool = False) -> None:
        target = self._local(path)
        try:
            target.unlink()
        except FileNotFoundError as exc:
            if not missing_ok:
                raise StorageError(f"deleting {self.url_for(path)}: no such file") from exc
        except OSError as exc:
            raise StorageError(f"deleting {self.url_for(path)}: {exc.strerror or exc}") from exc
        self._index.discard(path)
        # Directories are implicit, as in a blob container: remove the ones the file leaves empty.
        parent = target.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    # -- internals

    def _local(self, path: str) -> Path:
        target = self.root / check_path(path)
        if not self._inside(target):
            raise StorageError(f"invalid path {path!r}: it leads outside share {self.name!r} through a link")
        return target

    def _inside(self, target: Path) -> bool:
        real_root = self.root.resolve()
        return target.resolve().is_relative_to(real_root)

    def _stat(self, target: Path, path: str, doing: str) -> os.stat_result:
        try:
            st = target.stat()
        except FileNotFoundError as exc:
            raise StorageError(f"{doing} {self.url_for(path)}: no such file") from exc
        except OSError as exc:
            raise StorageError(f"{doing} {self.url_for(path)}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"{doing} {self.url_for(path)}: not a file")
        return st

    def _md5(self, rel: str, full: str, st: os.stat_result) -> str:
        cached = self._index.get(rel, st)
        if cached is not None:
            return cached
        digest = file_md5(full)
        self._index.put(rel, st, digest)
        return digest


def _unchanged(before: os.stat_result, after: os.stat_result, copied: int) -> bool:
    """Whether a file copied ``copied`` bytes long kept its size and mtime through the copy."""
    return (
        (after.st_size, after.st_mtime_ns)
        == (before.st_size, before.st_mtime_ns)
        == (copied, before.st_mtime_ns)
    )


def iter_local_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Every regular file under ``root`` (links to files included) as ``(path, relative POSIX path)``, sorted,
    whatever its name (azbai keeps its own files outside data directories); only a download's temporary
    ``.azbai-*.part`` file, which exists while that download runs, is skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            if _is_part_file(filename):
                continue
            full = Path(dirpath, filename)
            if full.is_file():
                yield full, full.relative_to(root).as_posix()
