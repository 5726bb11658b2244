"""The Azurite blob emulator behind the embedded default storage.

One emulator per workspace, started on demand on ``127.0.0.1`` on a free port, detached in its own session so that
it outlives the command that started it, and described by ``<workspace>/azurite.json``::

    {"pid": 4242, "port": 38123, "accounts": ["devstoreaccount1", "mydata"], "started": 1732250000.0,
     "location": "/home/me/project/.azbai/azurite"}

Batch AI jobs name storage accounts. Each account name maps to an Azurite account of the same name, declared to
Azurite through its ``AZURITE_ACCOUNTS`` environment variable; ``devstoreaccount1`` is always there. Every local
account uses Azurite's published development key (:data:`DEV_KEY`): it is a well-known constant, not a user
secret, so it may appear in connection strings. A user's own ``AZURITE_ACCOUNTS`` is not passed on.

Azurite reads its accounts at start (and every minute) from its environment; azbai starts it with a small Node hook
(``azbai/local/node/accounts.js``, through ``NODE_OPTIONS=--require``) that re-reads them from
``<workspace>/azurite-accounts`` whenever a request names an account it does not know. So :meth:`Emulator.ensure`
adds an account to a running emulator by writing that file: it never restarts an emulator that jobs or other
commands are using. Only an emulator started without the hook (an ``$AZBAI_AZURITE_BIN`` that is not Azurite's
``main.js``) is restarted (same data directory, same port when it is still free) to add an account. :meth:`Emulator.stop` signals
only the process recorded in the state file, and only after checking that it still is that emulator (its command
line names Azurite, this data directory and the recorded port). Before starting, an Azurite of this user that serves
the same data directory but lost its state file (the workspace was deleted under it) is stopped too: two emulators
on one directory overwrite each other's metadata.

Azurite saves its metadata every 5 s and on SIGTERM; a SIGKILLed emulator loses the last seconds of writes, which is
why :meth:`Emulator.stop` waits for a graceful exit before it escalates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azbai.errors import StorageError
from azbai.fsutil import atomic_write
from azbai.local.workspace import Workspace

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

log = logging.getLogger(__name__)

AZURITE_BIN_ENV = "AZBAI_AZURITE_BIN"
DEV_ACCOUNT = "devstoreaccount1"
#: Azurite's published development key (the same for every local account); not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HOST = "127.0.0.1"

_ACCOUNT_RE = re.compile(r"[a-z0-9]{3,24}")
_LOG_TAIL_LINES = 20

# Processes started by this interpreter, so that stop() can reap them (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


def check_account_name(name: str) -> str:
    """Return ``name`` if it is a valid storage account name (3-24 lowercase letters and digits), else raise."""
    if not isinstance(name, str) or not _ACCOUNT_RE.fullmatch(name):
        raise StorageError(
            f"invalid storage account name {name!r}: expected 3-24 lowercase letters and digits"
        )
    return name


def find_azurite() -> Path:
    """The ``azurite-blob`` executable: ``$AZBAI_AZURITE_BIN``, else ``node_modules/.bin`` above the package, else PATH."""
    configured = os.environ.get(AZURITE_BIN_ENV)
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise StorageError(f"${AZURITE_BIN_ENV} is {configured!r}, which is not an executable file")
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        candidate = folder / "node_modules" / ".bin" / "azurite-blob"
        if candidate.is_file():
            return candidate
    found = shutil.which("azurite-blob")
    if found:
        return Path(found)
    raise StorageError(
        "Azurite (the Azure Storage emulator) is not installed: run `make setup` (it runs `npm ci`), "
        f"or point ${AZURITE_BIN_ENV} at an azurite-blob executable"
    )


@dataclass(frozen=True)
class EmulatorState:
    """What ``azurite.json`` records about a started emulator (never a key)."""

    pid: int
    port: int
    accounts: tuple[str, ...]
    started: float
    location: str
    #: whether the emulator takes new accounts without a restart (it runs with azbai's accounts hook)
    live_accounts: bool = False

    @property
    def url(self) -> str:
        """The blob endpoint without an account: ``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``azurite.json``."""
        return {
            "pid": self.pid,
            "port": self.port,
            "accounts": list(self.accounts),
            "started": self.started,
            "location": self.location,
            "live_accounts": self.live_accounts,
        }

    @classmethod
    def from_dict(cls, data: Any) -> EmulatorState:
        """Read the JSON form; raise ``ValueError`` when it is malformed."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        accounts = data.get("accounts", [DEV_ACCOUNT])
        if not isinstance(accounts, list) or not all(
            isinstance(a, str) and _ACCOUNT_RE.fullmatch(a) for a in accounts
        ):
            raise ValueError("accounts is not a list of account names")
        return cls(
            pid=int(data["pid"]),
            port=int(data["port"]),
            accounts=tuple(accounts),
            started=float(data.get("started", 0.0)),
            location=str(data["location"]),
            live_accounts=bool(data.get("live_accounts", False)),
        )


@dataclass(frozen=True)
class EmulatorStatus:
    """The answer of :meth:`Emulator.status`: ``running``, the recorded state (if any) and a one-line ``detail``."""

    running: bool
    state: EmulatorState | None
    detail: str


class Emulator:
    """The Azurite blob emulator of one workspace: start, reuse, stop, and clients for its accounts."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        binary: Path | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.workspace = workspace
        self.binary = binary
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout

    # -- state -----------------------------------------------------------------------------------------------------

    def state(self) -> EmulatorState | None:
        """The recorded state, or ``None`` when no emulator was recorded (a malformed file counts as none)."""
        try:
            text = self.workspace.azurite_state.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.workspace.azurite_state}: {exc.strerror}") from exc
        try:
            return EmulatorState.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed %s: %s", self.workspace.azurite_state, exc)
            return None

    def status(self) -> EmulatorStatus:
        """Whether the recorded emulator is running and answering."""
        state = self.state()
        if state is None:
            return EmulatorStatus(False, None, "stopped")
        if not _is_ours(state):
            return EmulatorStatus(False, state, f"stopped (stale state: pid {state.pid} is gone)")
        if not _answers(state.port):
            return EmulatorStatus(False, state, f"not answering on port {state.port} (pid {state.pid})")
        return EmulatorStatus(True, state, f"running on {state.url} (pid {state.pid})")

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self, accounts: Iterable[str] = ()) -> EmulatorState:
        """Start a new emulator serving ``accounts`` (and ``devstoreaccount1``); an error if one is already running."""
        wanted = _account_set(accounts)
        with self._locked():
            state = self.state()
            if state is not None and _is_ours(state) and _answers(state.port):
                raise StorageError(
                    f"Azurite is already running for {self.workspace.root} on {state.url} (pid {state.pid})"
                )
            if state is not None:
                self._discard(state)
                wanted |= set(state.accounts)
            return self._start(wanted, port=state.port if state else None)

    def ensure(self, accounts: Iterable[str] = ()) -> EmulatorState:
        """Reuse the running emulator if it serves ``accounts``; otherwise (re)start it. Data persists on disk."""
        wanted = _account_set(accounts)
        with self._locked():
            state = self.state()
            if state is None:
                return self._start(wanted, port=None)
            if _is_ours(state) and _answers(state.port):
                if wanted <= set(state.accounts):
                    return state
                if state.live_accounts:
                    names = tuple(sorted(wanted | set(state.accounts)))
                    self._write_accounts(names)
                    state = dataclasses.replace(state, accounts=names)
                    self._write_state(state)
                    log.info("Azurite (pid %d) now serves %s, without a restart", state.pid, ", ".join(names))
                    return state
                log.info(
                    "restarting Azurite to add account(s) %s", ", ".join(sorted(wanted - set(state.accounts)))
                )
            else:
                log.info(
                    "the recorded Azurite (pid %d, port %d) is not running; starting one",
                    state.pid,
                    state.port,
                )
            self._discard(state)
            return self._start(wanted | set(state.accounts), port=state.port)

    def stop(self) -> EmulatorState | None:
        """Stop the recorded emulator (by its PID only: SIGTERM, then SIGKILL) and return its state; ``None`` when
        none was running (a stale state file is removed)."""
        with self._locked():
            state = self.state()
            if state is None:
                return None
            return state if self._discard(state) else None

    # -- clients ---------------------------------------------------------------------------------------------------

    def connection_string(self, account: str = DEV_ACCOUNT) -> str:
        """A connection string for ``account`` (path-style, on 127.0.0.1); starts the emulator when needed."""
        state = self.ensure([account])
        return connection_string(state.port, account)

    def blob_service(self, account: str = DEV_ACCOUNT) -> BlobServiceClient:
        """A client for ``account``'s blob service with short retries; starts the emulator when needed."""
        state = self.ensure([account])
        return blob_service_client(state.port, account)

    # -- internals -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.workspace.ensure()
        with open(self.workspace.azurite_lock, "a+b") as handle:
            try:
                import fcntl
            except ImportError:  # not POSIX: no cross-process lock
                yield
                return
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _discard(self, state: EmulatorState) -> bool:
        """End the recorded process if it is ours, and forget the state; return whether a process was ended."""
        ours = _is_ours(state)
        if ours:
            _terminate(state.pid, self.stop_timeout)
        else:
            log.info("pid %d is not this workspace's Azurite any more; not signalling it", state.pid)
        with contextlib.suppress(FileNotFoundError):
            self.workspace.azurite_state.unlink()
        return ours

    def _start(self, accounts: set[str], *, port: int | None) -> EmulatorState:
        binary = self.binary or find_azurite()
        _check_node(binary)
        location = self.workspace.azurite_dir
        location.mkdir(parents=True, exist_ok=True)
        # Two emulators must never share a data directory (each autosaves its metadata over the other's). One left
        # running without a state file (say, the workspace was deleted under it) is stopped first.
        for pid in _orphans(str(location)):
            log.warning("stopping Azurite pid %d: it serves %s but no state file records it", pid, location)
            _terminate(pid, self.stop_timeout)
        names = sorted(accounts | {DEV_ACCOUNT})
        env = dict(os.environ)
        env["AZURITE_ACCOUNTS"] = _accounts_value(names)
        hook, store_module = Path(__file__).with_name("node") / "accounts.js", _account_store_module(binary)
        live = hook.is_file() and store_module is not None
        if live:
            self._write_accounts(names)
            env["NODE_OPTIONS"] = f'{env.get("NODE_OPTIONS", "")} --require "{hook}"'.strip()
            env["AZBAI_AZURITE_ACCOUNTS_FILE"] = str(self.workspace.azurite_accounts)
            env["AZBAI_AZURITE_ACCOUNT_STORE"] = str(store_module)
        last_tail = ""
        for attempt in range(3):
            chosen = port if attempt == 0 and port is not None and _port_is_free(port) else _free_port()
            argv = [
                str(binary),
                "--blobHost", HOST,
                "--blobPort", str(chosen),
                "--location", str(location),
                "--skipApiVersionCheck",  # azure-storage-blob speaks API versions newer than Azurite knows
                "--disableProductStyleUrl",  # the account is always the first path segment
                "--disableTelemetry",
                "--silent",
                "--loose",
            ]  # fmt: skip
            with open(self.workspace.azurite_log, "ab") as log_file:
                offset = log_file.tell()
                log_file.write(f"--- azbai: starting Azurite on port {chosen} at {time.ctime()}\n".encode())
                log_file.flush()
                try:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=self.workspace.root,
                        start_new_session=True,  # its own session: it outlives the CLI and ignores its Ctrl-C
                        close_fds=True,
                    )
                except OSError as exc:
                    raise StorageError(f"cannot run {binary}: {exc.strerror}") from exc
            _children[proc.pid] = proc
            log.debug("started Azurite pid %d on port %d", proc.pid, chosen)
            if self._wait_ready(proc, chosen):
                state = EmulatorState(proc.pid, chosen, tuple(names), time.time(), str(location), live)
                self._write_state(state)
                log.info(
                    "Azurite running on %s (pid %d), accounts %s", state.url, state.pid, ", ".join(names)
                )
                return state
            last_tail = _log_tail(self.workspace.azurite_log, offset)
            if proc.poll() is None:  # started but never answered: ours, so end it
                _terminate(proc.pid, self.stop_timeout)
                raise StorageError(
                    f"Azurite did not answer on port {chosen} within {self.start_timeout:.0f} s; "
                    f"{self.workspace.azurite_log} ends with:\n{last_tail}"
                )
            _children.pop(proc.pid, None)
            if "EADDRINUSE" not in last_tail:
                break
            log.info("port %d was taken before Azurite could bind it; trying another", chosen)
        raise StorageError(
            f"Azurite exited while starting; {self.workspace.azurite_log} ends with:\n{last_tail}"
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + self.start_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if _answers(port):
                return proc.poll() is None
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        return False

    def _write_state(self, state: EmulatorState) -> None:
        atomic_write(self.workspace.azurite_state, json.dumps(state.to_dict(), indent=2) + "\n")

    def _write_accounts(self, names: Iterable[str]) -> None:
        """The accounts file the hook reads (Azurite's public development key only, no user secret)."""
        atomic_write(self.workspace.azurite_accounts, _accounts_value(names) + "\n", mode=0o600)


def _accounts_value(names: Iterable[str]) -> str:
    return ";".join(f"{name}:{DEV_KEY}" for name in sorted(set(names)))


def _account_store_module(binary: Path) -> Path | None:
    """Azurite's ``AccountDataStore.js`` beside the ``azurite-blob`` script (``dist/src/blob/main.js``), if any."""
    try:
        main = binary.resolve()
    except OSError:
        return None
    candidate = main.parent.parent / "common" / "AccountDataStore.js"
    return candidate if main.name == "main.js" and candidate.is_file() else None


def connection_string(port: int, account: str = DEV_ACCOUNT) -> str:
    """The connection string for ``account`` on a local emulator listening on ``port``."""
    check_account_name(account)
    return (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://{HOST}:{port}/{account};"
    )


def blob_service_client(port: int, account: str = DEV_ACCOUNT, *, pool_size: int = 64) -> BlobServiceClient:
    """A BlobServiceClient for ``account`` on ``port``: path-style URL, no proxies, a dead emulator fails in ~1 s.

    ``pool_size`` bounds the kept-alive connections, so parallel transfers reuse them instead of reconnecting.
    """
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient, LinearRetry
    from requests.adapters import HTTPAdapter

    check_account_name(account)
    session = requests.Session()
    session.trust_env = (
        False  # an HTTP(S)_PROXY must never capture 127.0.0.1 (and reading it costs CPU per request)
    )
    session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=pool_size))
    transport = RequestsTransport(
        session=session,
        session_owner=True,
        use_env_settings=False,
        connection_timeout=5,
        read_timeout=120,
        connection_data_block_size=1
        << 20,  # azure-core's 4 KiB default costs twice the CPU of a plain client
    )
    return BlobServiceClient(
        account_url=f"http://{HOST}:{port}/{account}",
        credential={"account_name": account, "account_key": DEV_KEY},
        transport=transport,
        retry_policy=LinearRetry(backoff=0.3, random_jitter_range=0, retry_total=2),  # type: ignore[arg-type]
    )


def _account_set(accounts: Iterable[str]) -> set[str]:
    if isinstance(accounts, str):
        accounts = [accounts]
    return {check_account_name(a) for a in accounts} | {DEV_ACCOUNT}


def _check_node(binary: Path) -> None:
    """Fail clearly when the binary is a Node script and Node is missing."""
    try:
        with open(binary, "rb") as handle:
            first_line = handle.readline(200)
    except OSError as exc:
        raise StorageError(f"cannot read {binary}: {exc.strerror}") from exc
    if first_line.startswith(b"#!") and b"node" in first_line and shutil.which("node") is None:
        raise StorageError(f"{binary} needs Node.js, which is not on PATH: install Node.js 18 or later")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _answers(port: int, timeout: float = 2.0) -> bool:
    """Whether an Azurite blob service answers HTTP on ``port`` (any status, with Azurite's Server header)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return (response.getheader("Server") or "").startswith("Azurite")
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if this interpreter started it, so that it does not linger as a zombie.

    Only emulators started here are reaped: waiting on any other child would steal its exit status from its owner.
    """
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def _cmdline(pid: int) -> list[str] | None:
    """The command line of a live (non-zombie) process, or ``None`` when there is none."""
    _reap(pid)
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            raw = (proc / "cmdline").read_bytes()
        except OSError:
            return None
        if stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"]):
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    try:  # no /proc (macOS): ask ps
        out = subprocess.run(
            ["ps", "-o", "stat=", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    stat, _, command = out.stdout.strip().partition(" ")
    if out.returncode != 0 or not stat or stat.startswith("Z"):
        return None
    return command.split()


def _orphans(location: str) -> list[int]:
    """Azurite processes of this user serving ``location`` (Linux only): emulators whose state file was lost."""
    proc = Path("/proc")
    if not (proc / "self").exists():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        argv = _cmdline(int(entry.name))
        if argv and "azurite" in " ".join(argv).lower() and _option(argv, "--location") == location:
            found.append(int(entry.name))
    return found


def _is_ours(state: EmulatorState) -> bool:
    """Whether ``state.pid`` is alive and is the Azurite started for this location and port."""
    argv = _cmdline(state.pid)
    if not argv or "azurite" not in " ".join(argv).lower():
        return False
    return _option(argv, "--location") == state.location and _option(argv, "--blobPort") == str(state.port)


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == name:
            return argv[i + 1]
    return None


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``, then SIGKILL after ``timeout`` seconds; wait until it is gone."""
    import psutil

    from azbai.local.processes import stop_processes

    try:
        left = stop_processes([psutil.Process(pid)], timeout)
    except psutil.NoSuchProcess:
        left = []
    except psutil.AccessDenied as exc:
        raise StorageError(f"not allowed to stop Azurite (pid {pid})") from exc
    _reap(pid)
    _children.pop(pid, None)
    if left:
        raise StorageError(f"Azurite (pid {pid}) did not end, even after SIGKILL")
    log.debug("Azurite pid %d ended", pid)


def _log_tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    lines = text.strip().splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(f"  {line}" for line in lines) or "  (empty)"
