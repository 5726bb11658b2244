"""A lazy blob mount: a FUSE file system over a container path, served by the runner, that fetches what is opened.

The semantics are blobfuse2's *file cache* mode, the one Azure ML and Batch AI mounted containers with:

* the directory tree is the container's listing (a directory is implied by ``/`` in blob names) plus the
  directories the job made; listing, ``stat`` and ``ls`` cost nothing but that one listing;
* a file is downloaded — whole, MD5-verified, into a cache directory — when it is first opened (or renamed, or
  truncated to a non-zero size); a blob that is never opened is never fetched;
* reads, writes, creates, ``mkdir``, ``unlink``, ``rmdir``, ``rename``, ``truncate``, ``chmod`` (which fetches:
  a script made executable must stay so), ``utimens``, ``statfs``, ``fsync`` work on the cache (the kernel checks
  permissions: ``default_permissions``); modes and times are not written back (blobs have none);
* nothing reaches the container while the job runs: write-back (:func:`read_journal` and the runner's stage-out)
  uploads the new and changed cache files and deletes the listed blobs the job removed. Removals are journalled
  durably as they happen, so a stage-out run later, after the runner was killed, still knows them — and a listed
  blob that merely was not fetched is never taken for deleted.

A *read-only* mount (``LazyMount(..., read_only=True)``, blobfuse2's ``-o ro``, what an Azure ML ``ro_mount`` is)
is mounted ``MS_RDONLY``: the kernel answers every write, create, removal, rename and attribute change with
``EROFS`` itself, and the server refuses them too (it never writes its cache but to fetch); reads fetch as above.

There is no libfuse here (nor fusermount, blobfuse2 or rclone): the module speaks the kernel's protocol
(``include/uapi/linux/fuse.h``, 7.31 layouts) over ``/dev/fuse`` itself, with ``mount(2)`` through ctypes, which
needs ``CAP_SYS_ADMIN``. :func:`fuse_unavailable` says why a mount cannot be made, so the caller can fall back to a
mirror. Requests are served by a few threads of the calling process; they never touch the mount point themselves
(that would wait on itself), only the cache. If that process dies, the kernel aborts the connection: the mount
point answers ``ENOTCONN`` until :func:`detach_under` lazily unmounts it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import posixpath
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from azbai.errors import AzbaiError, StorageError
from azbai.local.stores import Entry, Store, check_path, file_md5, iter_local_files

log = logging.getLogger(__name__)

#: the file system type our mounts carry in ``/proc/self/mountinfo``: only these are ever detached
FSTYPE = "fuse.azbai"

# -- the kernel protocol (include/uapi/linux/fuse.h) ---------------------------------------------------------------

_MAJOR, _MINOR = 7, 31
_IN_HEADER = struct.Struct("=IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, padding
_OUT_HEADER = struct.Struct("=IiQ")  # len, error (negative errno), unique
#: ino size blocks atime mtime ctime, their nsecs, mode nlink uid gid rdev blksize flags
_ATTR = struct.Struct("=QQQQQQIIIIIIIIII")
_ENTRY_OUT = struct.Struct("=QQQQII")  # nodeid generation entry_valid attr_valid, their nsecs; then the attr
_ATTR_OUT = struct.Struct("=QII")  # attr_valid, nsec, dummy; then the attr
_INIT_IN = struct.Struct("=IIII")  # major minor max_readahead flags
_INIT_OUT = struct.Struct("=IIIIHHIIHHI28x")
_GETATTR_IN = struct.Struct("=IIQ")  # getattr_flags dummy fh
_SETATTR_IN = struct.Struct("=IIQQQQQQIIIIIIII")
_MKNOD_IN = struct.Struct("=IIII")  # mode rdev umask padding
_MKDIR_IN = struct.Struct("=II")  # mode umask
_RENAME_IN = struct.Struct("=Q")  # newdir
_RENAME2_IN = struct.Struct("=QII")  # newdir flags padding
_OPEN_IN = struct.Struct("=II")  # flags open_flags
_CREATE_IN = struct.Struct("=IIII")  # flags mode umask open_flags
_OPEN_OUT = struct.Struct("=QII")  # fh open_flags padding
_RW_IN = struct.Struct("=QQIIQII")  # fh offset size flags lock_owner flags padding (read and write alike)
_WRITE_OUT = struct.Struct("=II")
_RELEASE_IN = struct.Struct("=QIIQ")
_FSYNC_IN = struct.Struct("=QII")
_STATFS_OUT = struct.Struct("=QQQQQIIII24x")
_DIRENT = struct.Struct("=QQII")  # ino off namelen type; then the name, padded to 8 bytes

LOOKUP, FORGET, GETATTR, SETATTR = 1, 2, 3, 4
MKNOD, MKDIR, UNLINK, RMDIR, RENAME = 8, 9, 10, 11, 12
OPEN, READ, WRITE, STATFS, RELEASE, FSYNC = 14, 15, 16, 17, 18, 20
FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR, FSYNCDIR = 25, 26, 27, 28, 29, 30
CREATE, INTERRUPT, DESTROY, BATCH_FORGET, RENAME2 = 35, 36, 38, 42, 45
_NO_REPLY = {FORGET, BATCH_FORGET, INTERRUPT}

_ASYNC_READ, _ATOMIC_O_TRUNC, _BIG_WRITES, _MAX_PAGES, _PARALLEL_DIROPS = 1, 8, 32, 1 << 22, 1 << 18
_WANTED = _ASYNC_READ | _ATOMIC_O_TRUNC | _BIG_WRITES | _MAX_PAGES | _PARALLEL_DIROPS
_FATTR_MODE, _FATTR_UID, _FATTR_GID, _FATTR_SIZE = 1, 2, 4, 8
_FATTR_ATIME, _FATTR_MTIME, _FATTR_FH, _FATTR_ATIME_NOW, _FATTR_MTIME_NOW = 16, 32, 64, 128, 256
_GETATTR_FH = 1
_FOPEN_KEEP_CACHE = 2
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_MAX_WRITE = 1 << 20  # with max_pages 256: one request moves up to 1 MiB
_BUFFER = _MAX_WRITE + 4096  # the kernel wants room for a whole write request
#: how long the kernel may trust a name or an attribute: every change goes through it, so this only bounds how
#: long the kernel keeps asking nothing
_VALID_SECONDS = 10
_THREADS = 8

_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 1, 2, 4
_MNT_DETACH = 2


class FuseUnavailable(AzbaiError):
    """A FUSE mount cannot be made here (no ``/dev/fuse``, no privilege for ``mount(2)``, …)."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


_unavailable: list[str] = []  # why the probe failed, once it did
_probe_lock = threading.Lock()


def fuse_unavailable() -> str | None:
    """Why this process cannot make a FUSE mount, or None when it can (probed once: a real mount and unmount)."""
    import tempfile

    with _probe_lock:
        if _unavailable:
            return _unavailable[0] or None
        reason = ""
        try:
            fd = os.open("/dev/fuse", os.O_RDWR)
        except OSError as exc:
            reason = f"/dev/fuse cannot be opened ({exc.strerror or exc})"
        else:
            try:
                with tempfile.TemporaryDirectory(prefix="azbai-fuse-probe-") as point:
                    try:
                        _mount(fd, point)
                    except FuseUnavailable as exc:
                        reason = str(exc)
                    else:
                        _libc().umount2(os.fsencode(point), _MNT_DETACH)
            finally:
                os.close(fd)
        _unavailable.append(reason)
        return reason or None


def _mount(fd: int, point: str, *, read_only: bool = False) -> None:
    options = (
        f"fd={fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()},default_permissions,allow_other"
    )
    libc = _libc()
    flags = _MS_NOSUID | _MS_NODEV | (_MS_RDONLY if read_only else 0)
    if libc.mount(b"azbai", os.fsencode(point), FSTYPE.encode(), flags, options.encode()):
        code = ctypes.get_errno()
        raise FuseUnavailable(f"mount(2) of a FUSE file system failed: {os.strerror(code)}")


def mounts_under(path: str | os.PathLike[str]) -> list[str]:
    """Our mount points (:data:`FSTYPE`) at or under ``path``, deepest first; dead ones (``ENOTCONN``) included."""
    base = os.path.abspath(path)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
            lines = info.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        if "-" not in fields:
            continue
        fstype = fields[fields.index("-") + 1]
        point = _unescape(fields[4])
        if fstype == FSTYPE and (point == base or point.startswith(base.rstrip("/") + "/")):
            found.append(point)
    return sorted(set(found), key=len, reverse=True)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def detach_under(path: str | os.PathLike[str]) -> int:
    """Lazily unmount (``MNT_DETACH``) our mounts at or under ``path`` — a live one or one whose server died;
    returns how many were detached."""
    libc = _libc()
    count = 0
    for point in mounts_under(path):
        if libc.umount2(os.fsencode(point), _MNT_DETACH) == 0:
            count += 1
        else:
            log.warning("cannot unmount %s: %s", point, os.strerror(ctypes.get_errno()))
    return count


def read_journal(path: str | os.PathLike[str]) -> set[str]:
    """The listed paths the job removed (unlinked, or renamed away), as the mount journalled them.

    A torn last line (the writer died mid-write) is ignored: its removal had not happened yet.
    """
    removed = set()
    try:
        with open(path, encoding="utf-8") as journal:
            for line in journal:
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, str):
                    removed.add(value)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot read the mount's journal {path}: {exc.strerror or exc}") from exc
    return removed


def write_back(
    store: Store,
    prefix: str,
    cache: Path,
    snapshot: dict[str, tuple[int, str]],
    journal: str | os.PathLike[str],
    *,
    keep: Callable[[str], bool] = lambda rel: True,
) -> tuple[int, int]:
    """A lazy mount's write-back, once it is unmounted: the cache's new and changed files (``keep`` says which of
    its files are data) are uploaded, and the listed paths the journal says were removed, and that the cache does
    not hold again, are deleted; a listed blob never fetched is in neither, so it stays as it is. Returns how many
    files were uploaded and deleted."""
    if not cache.is_dir():
        raise StorageError(f"{cache} is gone: the files the job wrote to its mount cannot be staged out")
    after = {rel: (path.stat().st_size, file_md5(path)) for path, rel in iter_local_files(cache) if keep(rel)}
    changed = [rel for rel, facts in after.items() if snapshot.get(rel) != facts]
    for rel in changed:
        store.upload_file(cache / rel, posixpath.join(prefix, rel) if prefix else rel)
    removed = read_journal(journal) & snapshot.keys() - after.keys()
    for rel in sorted(removed):
        store.delete(posixpath.join(prefix, rel) if prefix else rel, missing_ok=True)
    store.flush()
    return len(changed), len(removed)


def retire(mountpoint: Path, cache: Path) -> None:
    """Detach a lazy mount still there (a dead server leaves one answering ``ENOTCONN``) and leave a link to its
    cache in its place, so that its path shows what was fetched and written (an empty directory would say
    nothing was)."""
    detach_under(mountpoint)
    with contextlib.suppress(OSError):
        if mountpoint.is_dir() and not mountpoint.is_symlink() and not any(mountpoint.iterdir()):
            mountpoint.rmdir()
            mountpoint.symlink_to(cache, target_is_directory=True)


def listing_of(store: Store, prefix: str) -> dict[str, Entry]:
    """The files under ``prefix`` by their path relative to it, checked to make a tree (no blob ``a`` beside
    ``a/b``, no name a local file system cannot hold)."""
    base = f"{prefix}/" if prefix else ""
    files = {}
    for entry in store.list(base) if store.root_exists() else []:
        rel = entry.path[len(base) :]
        try:
            check_path(rel)
        except StorageError as exc:
            raise StorageError(f"{store.url_for(entry.path)} cannot be mounted: {exc}") from exc
        files[rel] = entry
    for rel in files:
        parent = rel.rpartition("/")[0]
        while parent:
            if parent in files:
                raise StorageError(
                    f"{store.url_for(base + parent)} is both a file and a folder of other files; "
                    "it cannot be mounted as a tree"
                )
            parent = parent.rpartition("/")[0]
    return files


# -- the file system -----------------------------------------------------------------------------------------------


def _errno(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _cstrings(data: bytes | memoryview, count: int) -> list[str]:
    parts = bytes(data).split(b"\0")
    if len(parts) <= count:
        raise _errno(errno.EINVAL)
    names = [os.fsdecode(p) for p in parts[:count]]
    if any(not n or "/" in n or n in (".", "..") for n in names):
        raise _errno(errno.EINVAL)
    return names


class _Tree:
    """The mounted view: a cache directory (every directory, and the files fetched or written) plus the listed
    blobs not fetched yet. ``lock`` guards the state: :meth:`materialize` takes it itself (and lets go of it while
    downloading); for the other methods the caller holds it."""

    def __init__(
        self, store: Store, prefix: str, listing: dict[str, Entry], cache: Path, journal: Path
    ) -> None:
        self.store, self.prefix = store, prefix
        self.cache = str(cache)
        self.staging = f"{cache}.fetching"
        self.lock = threading.Lock()
        self.listed = frozenset(listing)
        self.remote: dict[str, Entry] = {}
        self.remote_by_dir: dict[str, dict[str, Entry]] = {}
        self.fetching: dict[str, threading.Event] = {}
        self.ids: dict[str, int] = {"": 1}
        self.paths: dict[int, str] = {1: ""}
        self.next_id = 2
        self.dirs: dict[int, list[tuple[str, int, int]]] = {}
        self.next_dir = 1
        self.fetched_files = self.fetched_bytes = 0
        self.started = time.time()
        os.makedirs(self.cache, exist_ok=True)
        os.makedirs(self.staging, exist_ok=True)
        for rel, entry in listing.items():
            parent = rel.rpartition("/")[0]
            if parent:
                os.makedirs(self.local(parent), exist_ok=True)
            if not os.path.lexists(self.local(rel)):  # a cache left by an earlier runner of this job wins
                self.remote[rel] = entry
                self.remote_by_dir.setdefault(parent, {})[rel.rpartition("/")[2]] = entry
        self.journal = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def close(self) -> None:
        os.close(self.journal)

    # -- names and nodes

    def local(self, rel: str) -> str:
        return os.path.join(self.cache, rel) if rel else self.cache

    def path(self, nodeid: int) -> str:
        try:
            return self.paths[nodeid]
        except KeyError:
            raise _errno(errno.ENOENT) from None

    def child(self, nodeid: int, name: str) -> str:
        parent = self.path(nodeid)
        return f"{parent}/{name}" if parent else name

    def node(self, rel: str) -> int:
        nodeid = self.ids.get(rel)
        if nodeid is None:
            nodeid = self.ids[rel] = self.next_id
            self.paths[nodeid] = rel
            self.next_id += 1
        return nodeid

    def forget_tree(self, rel: str) -> None:
        """``rel`` and what was under it are gone: a new file there gets a new node (the kernel may still hold
        the old one, with its cached pages)."""
        for path in [p for p in self.ids if p == rel or p.startswith(rel + "/")]:
            self.paths.pop(self.ids.pop(path), None)

    def move_tree(self, old: str, new: str) -> None:
        for path in [p for p in self.ids if p == old or p.startswith(old + "/")]:
            nodeid = self.ids.pop(path)
            moved = new + path[len(old) :]
            self.ids[moved], self.paths[nodeid] = nodeid, moved

    def drop_remote(self, rel: str) -> None:
        self.remote.pop(rel, None)
        parent, _, name = rel.rpartition("/")
        siblings = self.remote_by_dir.get(parent)
        if siblings is not None:
            siblings.pop(name, None)
            if not siblings:
                del self.remote_by_dir[parent]

    def journal_removal(self, rels: Iterable[str]) -> None:
        """Record, durably and before it happens, that listed paths go away (write-back deletes them unless the
        cache holds a file there again)."""
        lines = "".join(json.dumps(r) + "\n" for r in rels if r in self.listed)
        if lines:
            os.write(self.journal, lines.encode("utf-8"))
            os.fsync(self.journal)

    # -- attributes

    def attr(self, rel: str, nodeid: int) -> bytes:
        entry = self.remote.get(rel)
        if entry is not None:
            seconds = int(self.started)
            return _ATTR.pack(
                nodeid, entry.size, (entry.size + 511) // 512, seconds, seconds, seconds, 0, 0, 0,
                stat.S_IFREG | 0o644, 1, os.getuid(), os.getgid(), 0, 4096, 0,
            )  # fmt: skip
        return stat_attr(os.lstat(self.local(rel)), nodeid)

    # -- fetching

    def materialize(self, rel: str, *, empty: bool = False) -> None:
        """Make a listed file a cache file: downloaded (verified), or created empty when it is being truncated to
        nothing. Concurrent callers for one file wait for one download; other files download in parallel."""
        while True:
            with self.lock:
                entry = self.remote.get(rel)
                if entry is None:
                    return
                event = self.fetching.get(rel)
                if event is None:
                    if empty:
                        os.close(os.open(self.local(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
                        self.drop_remote(rel)
                        return
                    event = self.fetching[rel] = threading.Event()
                    break
            event.wait()
        part = os.path.join(self.staging, f"{threading.get_ident()}-{time.monotonic_ns()}")
        try:
            got = self.store.download_file(entry.path, part)
            with self.lock:
                if self.remote.get(rel) is entry:  # not removed or replaced meanwhile
                    os.replace(part, self.local(rel))
                    self.drop_remote(rel)
                    self.fetched_files += 1
                    self.fetched_bytes += got.size
        finally:
            with self.lock:
                del self.fetching[rel]
            event.set()
            if os.path.lexists(part):
                os.unlink(part)

    def materialize_under(self, rel: str) -> None:
        with self.lock:
            below = [p for p in self.remote if p.startswith(rel + "/")]
        for path in below:
            self.materialize(path)


def stat_attr(st: os.stat_result, nodeid: int) -> bytes:
    """A ``fuse_attr`` from a local file's ``stat``, under our node id."""
    return _ATTR.pack(
        nodeid, st.st_size, st.st_blocks,
        int(st.st_atime), int(st.st_mtime), int(st.st_ctime),
        st.st_atime_ns % 10**9, st.st_mtime_ns % 10**9, st.st_ctime_ns % 10**9,
        st.st_mode, st.st_nlink, st.st_uid, st.st_gid, 0, st.st_blksize, 0,
    )  # fmt: skip


#: the requests that change the tree: a read-only mount refuses them (the kernel already does, for ``MS_RDONLY``)
_CHANGES = {SETATTR, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, RENAME2, CREATE, WRITE}


class _Server:
    """The request handlers: one per opcode, each returning the reply's payload or raising OSError (errno)."""

    def __init__(self, tree: _Tree, *, read_only: bool = False) -> None:
        self.tree = tree
        self.read_only = read_only
        self.handlers: dict[int, Callable[[int, memoryview], bytes]] = {
            INIT: self.init, LOOKUP: self.lookup, GETATTR: self.getattr, SETATTR: self.setattr,
            MKNOD: self.mknod, MKDIR: self.mkdir, UNLINK: self.unlink, RMDIR: self.rmdir,
            RENAME: self.rename, RENAME2: self.rename2, OPEN: self.open, CREATE: self.create,
            READ: self.read, WRITE: self.write, RELEASE: self.release, FLUSH: self.ok, FSYNC: self.fsync,
            STATFS: self.statfs, OPENDIR: self.opendir, READDIR: self.readdir, RELEASEDIR: self.releasedir,
            FSYNCDIR: self.ok, DESTROY: self.ok,
        }  # fmt: skip

    def handle(self, request: memoryview) -> tuple[int, bytes] | None:
        """(errno, payload) for a request, or None for those that get no reply."""
        length, opcode, _, nodeid = _IN_HEADER.unpack_from(request)[:4]
        if opcode in _NO_REPLY:
            return None  # FORGET/BATCH_FORGET: nodes live as long as the mount; INTERRUPT: requests finish anyway
        handler = self.handlers.get(opcode)
        if handler is None:
            return errno.ENOSYS, b""
        if self.read_only and opcode in _CHANGES:
            return errno.EROFS, b""
        try:
            return 0, handler(nodeid, request[_IN_HEADER.size : length])
        except OSError as exc:
            return exc.errno or errno.EIO, b""
        except AzbaiError as exc:  # a fetch that failed or did not verify
            log.warning("%s", exc)
            return errno.EIO, b""
        except Exception:  # a bug must not take the mount down with it
            log.exception("FUSE request %d failed", opcode)
            return errno.EIO, b""

    # -- replies

    def entry(self, rel: str) -> bytes:
        tree = self.tree
        with tree.lock:
            nodeid = tree.node(rel)
            attr = tree.attr(rel, nodeid)
        return _ENTRY_OUT.pack(nodeid, 0, _VALID_SECONDS, _VALID_SECONDS, 0, 0) + attr

    def attr_out(self, rel: str, nodeid: int) -> bytes:
        with self.tree.lock:
            return _ATTR_OUT.pack(_VALID_SECONDS, 0, 0) + self.tree.attr(rel, nodeid)

    def ok(self, nodeid: int, body: memoryview) -> bytes:
        return b""

    # -- the session

    def init(self, nodeid: int, body: memoryview) -> bytes:
        major, minor, readahead, flags = _INIT_IN.unpack_from(body)
        if major < _MAJOR or (major == _MAJOR and minor < 26):
            raise _errno(errno.EPROTO)
        granted = flags & _WANTED
        return _INIT_OUT.pack(
            _MAJOR, _MINOR, readahead, granted, 16, 12, _MAX_WRITE, 1, _MAX_WRITE // 4096, 0, 0
        )

    # -- names

    def lookup(self, nodeid: int, body: memoryview) -> bytes:
        (name,) = _cstrings(body, 1)
        return self.entry(self.tree.child(nodeid, name))

    def getattr(self, nodeid: int, body: memoryview) -> bytes:
        flags, _, fh = _GETATTR_IN.unpack_from(body)
        if flags & _GETATTR_FH:
            return _ATTR_OUT.pack(_VALID_SECONDS, 0, 0) + stat_attr(os.fstat(fh), nodeid)
        return self.attr_out(self.tree.path(nodeid), nodeid)

    def setattr(self, nodeid: int, body: memoryview) -> bytes:
        tree = self.tree
        fields = _SETATTR_IN.unpack_from(body)
        valid, fh, size, atime, mtime = fields[0], fields[2], fields[3], fields[5], fields[6]
        atimensec, mtimensec, mode, uid, gid = fields[8], fields[9], fields[11], fields[13], fields[14]
        rel = tree.path(nodeid)
        if valid & _FATTR_SIZE:
            tree.materialize(rel, empty=size == 0)
            if valid & _FATTR_FH:
                os.ftruncate(fh, size)
            else:
                os.truncate(tree.local(rel), size)
        elif valid & _FATTR_MODE:
            tree.materialize(rel)  # `chmod +x` is how a script is made runnable: its mode must stick
        with tree.lock:
            local = tree.local(rel)
            # a listed file not fetched yet keeps its attributes: chown and touch are accepted, and fetch nothing
            if rel not in tree.remote:
                if valid & _FATTR_MODE:
                    os.chmod(local, stat.S_IMODE(mode))
                if valid & (_FATTR_UID | _FATTR_GID):
                    os.lchown(local, uid if valid & _FATTR_UID else -1, gid if valid & _FATTR_GID else -1)
                if valid & (_FATTR_ATIME | _FATTR_MTIME | _FATTR_ATIME_NOW | _FATTR_MTIME_NOW):
                    st, now = os.lstat(local), time.time_ns()
                    a = now if valid & _FATTR_ATIME_NOW else atime * 10**9 + atimensec
                    m = now if valid & _FATTR_MTIME_NOW else mtime * 10**9 + mtimensec
                    os.utime(
                        local,
                        ns=(
                            a if valid & (_FATTR_ATIME | _FATTR_ATIME_NOW) else st.st_atime_ns,
                            m if valid & (_FATTR_MTIME | _FATTR_MTIME_NOW) else st.st_mtime_ns,
                        ),
                        follow_symlinks=False,
                    )
        return self.attr_out(rel, nodeid)

    def mkdir(self, nodeid: int, body: memoryview) -> bytes:
        mode, _ = _MKDIR_IN.unpack_from(body)
        (name,) = _cstrings(body[_MKDIR_IN.size :], 1)
        tree = self.tree
        rel = tree.child(nodeid, name)
        with tree.lock:
            if rel in tree.remote:
                raise _errno(errno.EEXIST)
            os.mkdir(tree.local(rel), stat.S_IMODE(mode))
        return self.entry(rel)

    def mknod(self, nodeid: int, body: memoryview) -> bytes:
        mode, _, _, _ = _MKNOD_IN.unpack_from(body)
        (name,) = _cstrings(body[_MKNOD_IN.size :], 1)
        if not stat.S_ISREG(mode):
            raise _errno(errno.EPERM)  # blobs are files: no devices, FIFOs or sockets
        tree = self.tree
        rel = tree.child(nodeid, name)
        with tree.lock:
            if rel in tree.remote:
                raise _errno(errno.EEXIST)
            os.close(os.open(tree.local(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(mode)))
        return self.entry(rel)

    def unlink(self, nodeid: int, body: memoryview) -> bytes:
        (name,) = _cstrings(body, 1)
        tree = self.tree
        rel = tree.child(nodeid, name)
        with tree.lock:
            if rel in tree.remote:
                tree.journal_removal([rel])
                tree.drop_remote(rel)
            else:
                local = tree.local(rel)
                if stat.S_ISDIR(os.lstat(local).st_mode):
                    raise _errno(errno.EISDIR)
                tree.journal_removal([rel])
                os.unlink(local)
            tree.forget_tree(rel)
        return b""

    def rmdir(self, nodeid: int, body: memoryview) -> bytes:
        (name,) = _cstrings(body, 1)
        tree = self.tree
        rel = tree.child(nodeid, name)
        with tree.lock:
            if rel in tree.remote:
                raise _errno(errno.ENOTDIR)
            if tree.remote_by_dir.get(rel):
                raise _errno(errno.ENOTEMPTY)
            os.rmdir(tree.local(rel))
            tree.forget_tree(rel)
        return b""

    def rename(self, nodeid: int, body: memoryview) -> bytes:
        (newdir,) = _RENAME_IN.unpack_from(body)
        return self._rename(nodeid, newdir, body[_RENAME_IN.size :], 0)

    def rename2(self, nodeid: int, body: memoryview) -> bytes:
        newdir, flags, _ = _RENAME2_IN.unpack_from(body)
        return self._rename(nodeid, newdir, body[_RENAME2_IN.size :], flags)

    def _rename(self, nodeid: int, newdir: int, names: memoryview, flags: int) -> bytes:
        if flags & ~_RENAME_NOREPLACE:
            raise _errno(errno.EINVAL)  # RENAME_EXCHANGE and RENAME_WHITEOUT are not offered
        old_name, new_name = _cstrings(names, 2)
        tree = self.tree
        old, new = tree.child(nodeid, old_name), tree.child(newdir, new_name)
        if old == new:
            return b""
        # what moves is fetched first: the cache holds it under its new name afterwards
        tree.materialize(old)
        tree.materialize_under(old)
        with tree.lock:
            src, dst = tree.local(old), tree.local(new)
            source_is_dir = stat.S_ISDIR(os.lstat(src).st_mode)
            if new in tree.remote:
                if flags & _RENAME_NOREPLACE:
                    raise _errno(errno.EEXIST)
                if source_is_dir:
                    raise _errno(errno.ENOTDIR)
            elif tree.remote_by_dir.get(new):
                raise _errno(errno.ENOTEMPTY)
            if flags & _RENAME_NOREPLACE and os.path.lexists(dst):
                raise _errno(errno.EEXIST)
            moving = [old] + [p for p in tree.listed if p.startswith(old + "/")]
            tree.journal_removal(moving)
            os.rename(src, dst)
            tree.drop_remote(new)
            tree.forget_tree(new)
            tree.move_tree(old, new)
        return b""

    # -- files

    def open(self, nodeid: int, body: memoryview) -> bytes:
        flags, _ = _OPEN_IN.unpack_from(body)
        if self.read_only and (flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC):
            raise _errno(errno.EROFS)
        rel = self.tree.path(nodeid)
        fd = self._open_local(rel, flags)
        return _OPEN_OUT.pack(fd, _FOPEN_KEEP_CACHE, 0)

    def create(self, nodeid: int, body: memoryview) -> bytes:
        flags, mode, _, _ = _CREATE_IN.unpack_from(body)
        (name,) = _cstrings(body[_CREATE_IN.size :], 1)
        rel = self.tree.child(nodeid, name)
        fd = self._open_local(rel, flags, create=stat.S_IMODE(mode))
        try:
            entry = self.entry(rel)
        except OSError:
            os.close(fd)
            raise
        return entry + _OPEN_OUT.pack(fd, _FOPEN_KEEP_CACHE, 0)

    def _open_local(self, rel: str, flags: int, create: int | None = None) -> int:
        tree = self.tree
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        truncate = bool(flags & os.O_TRUNC) and writing
        with tree.lock:
            listed = rel in tree.remote
        if listed and create is not None and flags & os.O_EXCL:
            raise _errno(errno.EEXIST)
        if listed:
            tree.materialize(rel, empty=truncate)
        # the kernel positions appends itself (it knows the size), so the cache file is opened without O_APPEND;
        # a write-only open reads too, for the pages the kernel completes around a partial write
        local_flags = (os.O_RDWR if writing else os.O_RDONLY) | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        with tree.lock:  # removed since it was fetched: ENOENT, as for any file removed before its open
            if create is not None:
                return os.open(tree.local(rel), local_flags | os.O_CREAT, create)
            return os.open(tree.local(rel), local_flags)

    def read(self, nodeid: int, body: memoryview) -> bytes:
        fh, offset, size = _RW_IN.unpack_from(body)[:3]
        return os.pread(fh, size, offset)

    def write(self, nodeid: int, body: memoryview) -> bytes:
        fh, offset, size = _RW_IN.unpack_from(body)[:3]
        data = memoryview(body)[_RW_IN.size : _RW_IN.size + size]
        written = os.pwrite(fh, data, offset)
        return _WRITE_OUT.pack(written, 0)

    def release(self, nodeid: int, body: memoryview) -> bytes:
        (fh,) = _RELEASE_IN.unpack_from(body)[:1]
        os.close(fh)
        return b""

    def fsync(self, nodeid: int, body: memoryview) -> bytes:
        fh, flags, _ = _FSYNC_IN.unpack_from(body)
        (os.fdatasync if flags & 1 else os.fsync)(fh)
        return b""

    def statfs(self, nodeid: int, body: memoryview) -> bytes:
        st = os.statvfs(self.tree.cache)
        return _STATFS_OUT.pack(
            st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree, st.f_bsize, 255, st.f_frsize, 0
        )

    # -- directories

    def opendir(self, nodeid: int, body: memoryview) -> bytes:
        """The listing is taken once per open, so offsets stay meaningful while the directory changes."""
        tree = self.tree
        with tree.lock:
            rel = tree.path(nodeid)
            parent = tree.ids.get(rel.rpartition("/")[0], 1)
            entries = [(".", nodeid, stat.S_IFDIR), ("..", parent, stat.S_IFDIR)]
            with os.scandir(tree.local(rel)) as scan:
                for item in scan:
                    kind = stat.S_IFDIR if item.is_dir(follow_symlinks=False) else stat.S_IFREG
                    entries.append((item.name, tree.node(f"{rel}/{item.name}" if rel else item.name), kind))
            for name in sorted(tree.remote_by_dir.get(rel, {})):
                entries.append((name, tree.node(f"{rel}/{name}" if rel else name), stat.S_IFREG))
            handle = tree.next_dir
            tree.next_dir += 1
            tree.dirs[handle] = entries
        return _OPEN_OUT.pack(handle, 0, 0)

    def readdir(self, nodeid: int, body: memoryview) -> bytes:
        fh, offset, size = _RW_IN.unpack_from(body)[:3]
        with self.tree.lock:
            entries = self.tree.dirs.get(fh)
        if entries is None:
            raise _errno(errno.EBADF)
        out = bytearray()
        for index in range(offset, len(entries)):
            name, ino, kind = entries[index]
            raw = os.fsencode(name)
            record = _DIRENT.pack(ino, index + 1, len(raw), kind >> 12) + raw
            record += b"\0" * (-len(record) % 8)
            if len(out) + len(record) > size:
                break
            out += record
        return bytes(out)

    def releasedir(self, nodeid: int, body: memoryview) -> bytes:
        (fh,) = _RELEASE_IN.unpack_from(body)[:1]
        with self.tree.lock:
            self.tree.dirs.pop(fh, None)
        return b""


class LazyMount:
    """A container path mounted at ``mountpoint``, fetched into ``cache`` as the job opens files.

    :meth:`start` lists the container (the :attr:`snapshot` write-back compares against), mounts and starts
    serving; :meth:`stop` unmounts and waits for the serving threads. Removals are journalled in ``journal``.
    ``read_only``: every change answers ``EROFS`` (the journal stays empty, the cache holds only what was fetched).
    """

    def __init__(
        self,
        store: Store,
        prefix: str,
        mountpoint: Path,
        cache: Path,
        journal: Path,
        *,
        threads: int = _THREADS,
        read_only: bool = False,
    ) -> None:
        self.store, self.prefix = store, prefix
        self.mountpoint, self.cache, self.journal = Path(mountpoint), Path(cache), Path(journal)
        self.threads = threads
        self.read_only = read_only
        self.snapshot: dict[str, tuple[int, str]] = {}
        self._tree: _Tree | None = None
        self._fd: int | None = None
        self._workers: list[threading.Thread] = []

    @property
    def fetched(self) -> tuple[int, int]:
        """Files and bytes downloaded so far."""
        tree = self._tree
        return (tree.fetched_files, tree.fetched_bytes) if tree is not None else (0, 0)

    def start(self) -> None:
        """List, mount, serve. :class:`FuseUnavailable` when the kernel refuses the mount (nothing is left
        mounted then); :class:`StorageError` when the container cannot be listed or is not a tree."""
        listing = listing_of(self.store, self.prefix)
        self.snapshot = {rel: (e.size, e.md5 or "") for rel, e in listing.items()}
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._tree = _Tree(self.store, self.prefix, listing, self.cache, self.journal)
        try:
            self._fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            self._tree.close()
            raise FuseUnavailable(f"/dev/fuse cannot be opened ({exc.strerror or exc})") from exc
        try:
            _mount(self._fd, str(self.mountpoint), read_only=self.read_only)
        except FuseUnavailable:
            os.close(self._fd)
            self._tree.close()
            self._fd = None
            raise
        server = _Server(self._tree, read_only=self.read_only)
        for index in range(self.threads):
            worker = threading.Thread(
                target=self._serve, args=(server,), name=f"azbai-fuse-{index}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def _serve(self, server: _Server) -> None:
        fd = self._fd
        assert fd is not None
        buffer = bytearray(_BUFFER)  # one per thread, reused: a request is handled before the next is read
        while True:
            try:
                request = memoryview(buffer)[: os.readv(fd, [buffer])]
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue  # ENOENT: the request was interrupted before we read it
                if exc.errno != errno.ENODEV:  # ENODEV: unmounted
                    log.error("the FUSE mount at %s stopped: %s", self.mountpoint, exc)
                return
            if len(request) < _IN_HEADER.size:
                continue
            reply = server.handle(request)
            if reply is None:
                continue
            code, payload = reply
            unique = _IN_HEADER.unpack_from(request)[2]
            header = _OUT_HEADER.pack(_OUT_HEADER.size + len(payload), -code if code else 0, unique)
            try:
                os.write(fd, header + payload)
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # ENOENT: the request was interrupted meanwhile
                    log.warning("cannot reply to a FUSE request at %s: %s", self.mountpoint, exc)

    def stop(self, timeout: float = 30) -> None:
        """Unmount (lazily: a process still inside keeps its view until it leaves) and stop serving."""
        if self._fd is None:
            return
        detach_under(self.mountpoint)
        for worker in self._workers:
            worker.join(timeout)
        if any(w.is_alive() for w in self._workers):
            log.warning(
                "%s is still in use after %g s; it is unmounted once it is left", self.mountpoint, timeout
            )
            return  # the serving threads keep the device open until then
        os.close(self._fd)
        self._fd = None
        if self._tree is not None:
            self._tree.close()
            files, size = self.fetched
            listed = len(self.snapshot)
            log.info("%s: fetched %d file(s), %d bytes, of %d listed", self.mountpoint, files, size, listed)
