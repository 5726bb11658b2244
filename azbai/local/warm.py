"""Warm starts for the local engine's Python commands: a zygote forks the job instead of a fresh interpreter.

A pipeline's command step is a launcher that runs ``bash -c "python script.py ARGS"``: a shell, an interpreter
start and the script's imports (numpy, PyAV, PIL: ~0.3 s here) before its first line of work, paid again by
every step of every run. A :class:`CommandPool` keeps a *zygote* per environment the jobs share: a process that
has imported what earlier jobs imported and forks a process that becomes the job. The launcher asks for it
(``--warm ADDRESS``) only for a command line that is one simple command (words and ``$VARIABLES``, nothing
else a shell would interpret) running this very interpreter on a ``.py`` file or with ``-m``; the zygote forks
only for an environment that agrees with its own (but for the job's Batch AI, Azure ML and azbai variables) and
a script whose folder shadows nothing it preloaded. Anything else, or any failure, and the launcher starts the
command as before.

The forked process is the job as ``bash -c`` would have started it: its own session, the launcher's standard
streams and working directory, the job's environment with what bash adds (``PWD``, ``SHLVL``, ``_``), default
signal handlers but for the signals its launcher's child would inherit as ignored (``nohup``'s SIGHUP), the
launcher's signal mask, ``sys.argv``, ``sys.path[0]`` and ``__main__`` as ``python script.py`` sets them, and the
same exit: ``SystemExit``'s code, 1 and a traceback for an exception, death by SIGINT for ``KeyboardInterrupt``,
non-daemon threads joined and atexit's functions run. It is the zygote's child, so the zygote reports its exit
status to the launcher, and sends it SIGTERM if the launcher dies first (as ``PR_SET_PDEATHSIG`` does for a
child of the launcher). When the job ends it tells the zygote which top-level modules it imported from outside
its own folders; the zygote imports those that it finds at the same paths, so the next job starts with them.

The local engine starts its launchers the same way (a launcher is a Python script too), in the engine's process
group as its child would be, watching the zygote's life instead of the engine's (the zygote exits within a
second of the engine, and at once sends SIGTERM to a launcher whose engine's connection closed).

What a warm process shows differently: its parent is the zygote; ``/proc/PID/environ`` and ``sys.orig_argv``
are the zygote's (the job's processes that it starts show the job's, and the launcher lists its pid in the job's
``pids`` file); it holds one more descriptor (close-on-exec), the pipe it reports its imports through; and
modules the zygote imported for earlier jobs are already in ``sys.modules``.

Standard library only, and loaded under a private name (never through ``azbai``): the zygote imports only
what jobs imported. ``AZBAI_WARM=0`` turns warm starts off.
"""

from __future__ import annotations

import array
import atexit
import builtins
import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
import types
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

#: ``0`` turns warm starts off: every command starts as a fresh ``bash -c``
WARM_ENV = "AZBAI_WARM"
#: what may differ between the zygote's environment and a job's (as for the parallel step's fork servers): the
#: job's Batch AI, Azure ML and azbai variables, and what a shell sets
_PER_JOB_ENV = re.compile(r"(AZ_BATCHAI_|AZUREML_|AZBAI_).*|PWD|OLDPWD|SHLVL|_")
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
_MAX_MESSAGE = 1 << 20
#: how much of the module list a job may send back (it writes to a pipe nobody reads until it has exited)
_MAX_LEARNED = 60 * 1024
_BOOT = (
    "import importlib.util as u,sys;s=u.spec_from_file_location('_azbai_warm',sys.argv[1]);"
    "m=u.module_from_spec(s);sys.modules[s.name]=m;s.loader.exec_module(m);m._zygote_main(sys.argv[2:])"
)


def usable() -> bool:
    """Whether warm starts can be: Linux (pidfds), and not turned off."""
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "pidfd_open")
        and os.environ.get(WARM_ENV, "1") != "0"
    )


# --- the engine's end ------------------------------------------------------------------------------------------


class CommandPool:
    """The zygotes of one engine, one per shared environment (the oldest goes when there are more than four).

    A zygote lives until :meth:`close` (or the pool's garbage collection) or the engine's death.
    """

    def __init__(self) -> None:
        self._zygotes: dict[tuple[tuple[str, str], ...], _Zygote] = {}
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._zygotes)

    def address(self, env: Mapping[str, str]) -> str | None:
        """The socket of a zygote for jobs whose environment is ``env`` (less their own variables); None where
        warm starts cannot be. The zygote is started on first use; the launcher's request waits in its socket's
        queue until it is ready."""
        if not usable():
            return None
        shared = {name: value for name, value in env.items() if not _PER_JOB_ENV.fullmatch(name)}
        key = tuple(sorted(shared.items()))
        with self._lock:
            zygote = self._zygotes.get(key)
            if zygote is not None and zygote.proc.poll() is not None:
                del self._zygotes[key]
                zygote.close()
                zygote = None
            if zygote is None:
                while len(self._zygotes) >= 4:
                    self._zygotes.pop(next(iter(self._zygotes))).close()
                zygote = _Zygote.start(shared)
                if zygote is None:
                    return None
                self._zygotes[key] = zygote
            return zygote.address

    def pid(self, address: str) -> int | None:
        """The process id of the zygote at ``address``."""
        return next((z.proc.pid for z in self._zygotes.values() if z.address == address), None)

    def pids(self) -> list[int]:
        """The zygotes' process ids."""
        return [zygote.proc.pid for zygote in self._zygotes.values()]

    def close(self) -> None:
        """End the zygotes (a job one forked that still runs gets SIGTERM with it, as from a dying launcher)."""
        with self._lock:
            _close_all(self._zygotes)


def _close_all(zygotes: dict[Any, _Zygote]) -> None:
    while zygotes:
        zygotes.pop(next(iter(zygotes))).close()


class _Zygote:
    def __init__(self, proc: subprocess.Popen[bytes], address: str) -> None:
        self.proc = proc
        self.address = address

    @classmethod
    def start(cls, env: dict[str, str]) -> _Zygote | None:
        # Bound here, so that a launcher can connect at once: its request waits in the queue until the zygote,
        # a fresh interpreter, accepts it.
        address = f"azbai-warm-command-{os.getpid()}-{uuid.uuid4().hex}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # the configuration (the environment it compares jobs' with) on its stdin, not in its command line,
        # which every user of the machine can read
        config = {"listen_fd": listener.fileno(), "watch": os.getpid(), "env": env}
        try:
            listener.bind("\0" + address)
            listener.listen(16)
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, os.path.abspath(__file__)],
                env=env,
                cwd="/",  # nothing in a working directory shadows what it imports
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(listener.fileno(),),
            )
        except OSError:
            return None
        finally:
            listener.close()  # the zygote's copy is the socket now: once it is gone, connecting is refused
        assert proc.stdin is not None
        try:
            with proc.stdin:
                proc.stdin.write(json.dumps(config).encode())
        except OSError:  # it died at its start: the launchers that connect are refused and start cold
            pass
        return cls(proc, address)

    def close(self) -> None:
        """End it (a launcher that connects later is refused and starts its job cold). A job it forked that
        still runs gets SIGTERM as the zygote dies, as a child of a dying launcher would."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the launcher's end ----------------------------------------------------------------------------------------
# (the launcher has its own copy of this client, in the standard library alone: `azbai.launcher.WarmChild`)


# --- the zygote -------------------------------------------------------------------------------------------------


def _zygote_main(argv: Sequence[str]) -> NoReturn:
    code = 1
    try:
        config = json.loads(sys.stdin.buffer.read())
        code = _Server(config).serve()
    finally:
        os._exit(code)  # nothing to tear down: it only imported


class _Job:
    def __init__(self, pid: int, pidfd: int, reply: socket.socket, learned: int, death_signal: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.reply: socket.socket | None = reply
        self.learned = learned
        self.death_signal = death_signal


class _Server:
    def __init__(self, config: dict[str, Any]) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle
        # not PR_SET_PDEATHSIG, which fires when the engine's *thread* that started it ends: the engine's pid,
        # watched every second
        self.watch = int(config["watch"])
        self.listener = socket.socket(fileno=int(config["listen_fd"]))
        self.given: dict[str, str] = config["env"]
        # what this interpreter added to its own environment at start (PEP 538's LC_CTYPE): a fresh `python`
        # in the job's environment would add it too
        self.added = {k: v for k, v in os.environ.items() if k not in self.given}
        # `-c` put '' (the working directory) first on sys.path: a job's imports must not come from there
        if sys.path and sys.path[0] in ("", os.getcwd()):
            del sys.path[0]
        self.base_path = list(sys.path)
        self.jobs: dict[int, _Job] = {}  # by pidfd
        self.tainted = False  # a preload started a thread: forking would copy a process mid-way

    def serve(self) -> int:
        import select

        while True:
            if os.getppid() != self.watch:
                return 0
            waiting = [self.listener.fileno(), *self.jobs]
            waiting += [job.reply.fileno() for job in self.jobs.values() if job.reply is not None]
            try:
                readable, _, _ = select.select(waiting, [], [], 1.0)
            except OSError:
                return 0
            for fd in readable:
                if fd == self.listener.fileno():
                    try:
                        conn, _ = self.listener.accept()
                    except OSError:
                        return 0  # the pool closed the socket
                    self.request(conn)
                elif fd in self.jobs:
                    self.exited(self.jobs.pop(fd))
                else:
                    for job in self.jobs.values():
                        if job.reply is not None and job.reply.fileno() == fd:
                            self.launcher_message(job)

    def request(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            _pid, uid, _ = _PEERCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid != os.getuid():
                conn.close()
                return
            conn.settimeout(5.0)
            data, ancillary, _, _ = conn.recvmsg(
                _MAX_MESSAGE, socket.CMSG_SPACE(3 * array.array("i").itemsize)
            )
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
            request = json.loads(data)
            refusal = self.refusal(request, fds)
            if refusal:
                _send(conn, {"refused": refusal})
                conn.close()
                return
            # Two steps, so that a launcher that gave up waiting (and starts the job cold) never gets it twice
            _send(conn, {"ready": True})
            if conn.recv(16) != b"go":
                conn.close()
                return
            read_end, write_end = os.pipe()
            job_pid = os.fork()
            if job_pid == 0:
                os.close(read_end)
                _become_job(request, fds, write_end, self)
            os.close(write_end)
            try:
                pidfd = os.pidfd_open(job_pid)
            except OSError:  # it cannot be watched: stop it now, before its launcher starts the job cold
                os.kill(job_pid, signal.SIGKILL)
                os.waitpid(job_pid, 0)
                os.close(read_end)
                raise
            job = _Job(job_pid, pidfd, conn, read_end, int(request.get("death_signal", 15)))
            self.jobs[job.pidfd] = job  # from now on it is reaped, and stopped if its launcher goes
            conn.settimeout(None)
            try:
                _send(conn, {"pid": job_pid})
            except OSError:
                self.launcher_gone(job)
        except (OSError, ValueError, KeyError, TypeError):
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def refusal(self, request: dict[str, Any], fds: list[int]) -> str | None:
        """Why this zygote cannot start the job as a fresh interpreter would, or None."""
        if len(fds) != 3:
            return "three standard streams expected"
        if self.tainted or threading.active_count() > 1:
            return "this zygote runs threads"
        executable = request["executable"]
        if os.path.abspath(executable) != sys.executable and not (
            os.path.dirname(os.path.abspath(executable)) == os.path.dirname(sys.executable)
            and os.path.samefile(executable, sys.executable)
        ):
            return f"{executable} is not this zygote's interpreter"
        env = request["env"]
        names = {*env, *self.given}
        differ = sorted(n for n in names if not _PER_JOB_ENV.fullmatch(n) and env.get(n) != self.given.get(n))
        if differ:
            return "the job's environment differs in " + ", ".join(differ[:5])  # names only, never values
        args = request["args"]
        if args[0] == "-m":
            if len(args) < 2 or not re.fullmatch(r"[A-Za-z_][\w.]*", args[1]):
                return "-m needs a module name"
            first = request["cwd"]
        else:
            script = args[0]
            if not script.endswith(".py") or not os.path.isfile(os.path.join(request["cwd"], script)):
                return "not a .py file"
            first = os.path.dirname(os.path.realpath(os.path.join(request["cwd"], script)))
        # a module of its folder would have been imported instead of one this process holds (a job's json.py)
        held = {name for name in sys.modules if "." not in name and name != "__main__"}
        shadowed = sorted(_provided_by(first) & held)
        if shadowed:
            return f"{first} has modules of the names this zygote imported ({', '.join(shadowed[:5])})"
        return None

    def launcher_message(self, job: _Job) -> None:
        assert job.reply is not None
        try:
            data = job.reply.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.launcher_gone(job)

    def launcher_gone(self, job: _Job) -> None:
        """What the launcher's death signal would have done to its child."""
        if job.reply is not None:
            job.reply.close()
            job.reply = None
        with contextlib.suppress(OSError):
            os.kill(job.pid, job.death_signal)

    def exited(self, job: _Job) -> None:
        try:
            _, status = os.waitpid(job.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = -signal.SIGKILL
        os.close(job.pidfd)
        if job.reply is not None:
            with contextlib.suppress(OSError):
                _send(job.reply, {"status": code})
            job.reply.close()
        try:
            os.set_blocking(job.learned, False)
            text = os.read(job.learned, 1 << 16)
        except OSError:
            text = b""
        os.close(job.learned)
        with contextlib.suppress(ValueError):
            self.learn(json.loads(text) if text else [])

    def learn(self, modules: list[list[str]]) -> None:
        """Import what a job imported from outside its folder, in its order: a top-level module only where this
        process finds the same file, a submodule only of a package this process holds."""
        for name, path in modules:
            if self.tainted:
                return
            top = name.partition(".")[0]
            if name in sys.modules or (top != name and top not in sys.modules):
                continue
            try:
                if top == name:
                    spec = importlib.util.find_spec(name)
                    if (
                        spec is None
                        or not spec.origin
                        or os.path.realpath(spec.origin) != os.path.realpath(path)
                    ):
                        continue
                importlib.import_module(name)
            except BaseException:
                continue
            if threading.active_count() > 1:
                self.tainted = True


def _provided_by(folder: str) -> set[str]:
    """The top-level modules ``folder``, first on a job's ``sys.path``, would provide (by name, not imported)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return {"<unreadable>"}
    return {name.partition(".")[0] if name.endswith((".py", ".so", ".pyc")) else name for name in names}


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode())


def _die_with(parent: int, signum: int) -> None:
    """``PR_SET_PDEATHSIG``: get ``signum`` when ``parent`` dies; exit now if it already has."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signum)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(128 + signum)


# --- the job ----------------------------------------------------------------------------------------------------


def _become_job(request: dict[str, Any], fds: list[int], learned: int, server: _Server) -> NoReturn:
    """In the forked child: turn into ``python ARGS`` started by ``bash -c`` from the launcher."""
    code = 1
    before: set[str] = set()
    first = ""
    try:
        zygote = os.getppid()
        if request.get("new_session", True):
            os.setsid()
        _die_with(zygote, int(request.get("death_signal", 15)))  # the zygote dies with the engine
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.closerange(3, learned)
        os.closerange(learned + 1, max(1 << 16, os.sysconf("SC_OPEN_MAX")))
        os.set_inheritable(learned, False)
        for sock in (server.listener, *(job.reply for job in server.jobs.values() if job.reply is not None)):
            sock.detach()  # their descriptors are closed: nothing may close them again
        server.jobs.clear()
        signal.pthread_sigmask(signal.SIG_SETMASK, request.get("blocked", []))
        ignored = set(request.get("ignored", ()))  # what the requester's own child would inherit as ignored
        for signum in signal.valid_signals():
            if signum in (signal.SIGKILL, signal.SIGSTOP):
                continue
            handler: Any = signal.SIG_DFL
            if signum in ignored:
                handler = signal.SIG_IGN  # Python's start leaves an ignored SIGINT ignored too
            elif signum == signal.SIGINT:
                handler = signal.default_int_handler
            elif signum in (signal.SIGPIPE, signal.SIGXFSZ):
                handler = signal.SIG_IGN  # as Python's start sets them
            with contextlib.suppress(OSError, ValueError):
                signal.signal(signum, handler)
        cwd = request["cwd"]
        os.chdir(cwd)
        env = {**server.added, **request["env"]}
        if request.get("command") is not None:  # started by `bash -c`: what bash adds and drops
            env.update(_bash_variables(request["env"], request["command"]))
            if not os.path.isdir(env.get("OLDPWD", "")):
                env.pop("OLDPWD", None)  # bash keeps it only where it names a directory
        os.environ.clear()
        os.environ.update(env)
        _fresh_standard_streams()
        args = request["args"]
        before = set(sys.modules)
        if args[0] == "-m":
            first = os.getcwd()
            sys.path[:] = [first, *server.base_path]
            sys.argv = ["-m", *args[2:]]
            importlib.invalidate_caches()
            code = _run(lambda: _run_module(args[1]))
        else:
            script = args[0]
            first = os.path.dirname(os.path.realpath(script))
            sys.path[:] = [first, *server.base_path]
            sys.argv = list(args)
            importlib.invalidate_caches()
            path = os.path.join(os.getcwd(), script)  # __file__: absolute, the link it was named by kept
            code = _run(lambda: _run_script(path))
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            _report_modules(learned, before, first)
        os._exit(code)


def _bash_variables(env: Mapping[str, str], command: str) -> dict[str, str]:
    """What ``bash -c`` sets in the environment of the one command it runs (in the working directory)."""
    changed = {"_": command}
    pwd = env.get("PWD", "")
    try:
        kept = os.path.isabs(pwd) and os.path.samefile(pwd, ".")
    except OSError:
        kept = False
    changed["PWD"] = pwd if kept else os.getcwd()
    shlvl = env.get("SHLVL", "0")
    changed["SHLVL"] = shlvl if shlvl.isdigit() else "0"  # bash counts one up, then down again as it execs
    return changed


def _fresh_standard_streams() -> None:
    """New ``sys.stdin``/``stdout``/``stderr`` on descriptors 0–2, made as Python's start makes them."""
    # this interpreter started in the job's environment (PYTHONUNBUFFERED, PYTHONIOENCODING): its streams say how
    unbuffered = bool(getattr(sys.stdout, "write_through", False))
    encoding, errors = sys.stdout.encoding, sys.stdout.errors
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(  # type: ignore[misc]
        open(0, "rb", closefd=False),  # noqa: SIM115  # the interpreter's own, never closed
        encoding=encoding,
        errors=errors,
    )
    streams = []
    for fd, stream_errors in ((1, errors), (2, "backslashreplace")):
        raw = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)  # noqa: SIM115
        streams.append(
            io.TextIOWrapper(
                raw,
                encoding=encoding,
                errors=stream_errors,
                line_buffering=(fd == 2 or os.isatty(fd)) and not unbuffered,
                write_through=unbuffered,
            )
        )
    sys.stdout = sys.__stdout__ = streams[0]  # type: ignore[misc]
    sys.stderr = sys.__stderr__ = streams[1]  # type: ignore[misc]


def _run_script(path: str) -> None:
    with open(path, "rb") as handle:
        source = handle.read()
    main = types.ModuleType("__main__")
    main.__dict__.update(
        {
            "__file__": path,
            "__cached__": None,
            "__builtins__": builtins,
            "__loader__": importlib.machinery.SourceFileLoader("__main__", path),
            "__spec__": None,
        }
    )
    sys.modules["__main__"] = main
    exec(compile(source, path, "exec"), main.__dict__)


def _run_module(name: str) -> None:
    import runpy

    runpy._run_module_as_main(name)  # type: ignore[attr-defined]  # what `python -m` calls


def _run(body: Any) -> int:
    """Run ``body`` and end as the interpreter does: the exit status, threads joined, atexit's functions."""
    code = 0
    try:
        body()
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt as exc:
        _print_exception(exc)
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # CPython ends an unhandled KeyboardInterrupt by SIGINT
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException as exc:
        _print_exception(exc)
        code = 1
    return _finish(code)


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    with contextlib.suppress(BaseException):
        print(value, file=sys.stderr)
    return 1


def _print_exception(exc: BaseException) -> None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next  # this module's frames: a fresh interpreter's traceback starts at the script
    with contextlib.suppress(BaseException):
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)  # the hook prints the exception's own


def _finish(code: int = 0) -> int:
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # join the non-daemon threads, as at exit
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            code = _exit_code(exc.code)
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = code or 120  # as CPython exits when it cannot flush stdout
    return code


def _report_modules(fd: int, before: set[str], first: str) -> None:
    """Tell the zygote the modules the job imported from outside ``first`` (its folder), in their order."""
    inside = os.path.join(first, "")
    found, outside = [], set()
    for name, module in list(sys.modules.items()):
        if name in before or name == "__main__":
            continue
        top = name.partition(".")[0]
        path = getattr(module, "__file__", None)
        if top == name:
            if not isinstance(path, str) or os.path.realpath(path).startswith(inside):
                continue
            outside.add(name)
        elif top not in outside and top not in before:
            continue
        found.append([name, path if isinstance(path, str) else ""])
    data = json.dumps(found).encode()
    if len(data) <= _MAX_LEARNED:
        with contextlib.suppress(OSError):
            os.write(fd, data)
