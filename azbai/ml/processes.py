"""Start a job's processes as Azure ML does: ``instance_count`` × the distribution's processes, one environment each.

======================  ======================================================================================
distribution            processes, and what each gets beside ``AZUREML_*`` and the job's environment_variables
======================  ======================================================================================
none                    one per instance
``mpi``                 ``process_count_per_instance`` per instance: ``OMPI_COMM_WORLD_RANK``, ``_SIZE``,
                        ``_LOCAL_RANK``, ``_LOCAL_SIZE``, ``_NODE_RANK``
``pytorch``             ``process_count_per_instance`` per instance: ``MASTER_ADDR`` (127.0.0.1),
                        ``MASTER_PORT`` (a free port), ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``NODE_RANK``,
                        ``LOCAL_WORLD_SIZE``
``tensorflow``          ``parameter_server_count`` + ``worker_count`` (default: ``instance_count``), spread over
                        the instances: ``TF_CONFIG`` ``{"cluster": {"ps", "worker"}, "task": {"type", "index"}}``;
                        parameter servers are stopped once every worker has exited (and they have run 2 s)
======================  ======================================================================================

Each instance has its own copy of the code directory as its working directory (``<run>/nodes/<n>/wd``), as each
node has its own snapshot. The command runs as ``bash -c COMMAND`` (it is a shell command line, as on Azure ML)
in its own process group; stdout and stderr go to ``user_logs/std_log.txt`` (one process) or
``user_logs/std_log_process_<rank>.txt``, as ``az ml job stream`` shows them. When a process fails the others are
stopped; ``limits.timeout`` stops them all (exit status 124).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from azbai.errors import MlError

log = logging.getLogger(__name__)

EXIT_TIMEOUT = 124
EXIT_CANCELED = 128 + signal.SIGTERM
GRACE_SECONDS = 10.0
#: a parameter server is stopped no sooner than this after its start (so its launcher is up and logging)
PS_SETTLE_SECONDS = 2.0
_POLL = 0.05


@dataclass(frozen=True)
class Rank:
    """One process of the job: where it runs and the variables Azure ML gives it."""

    rank: int
    node: int
    env: dict[str, str]
    log_name: str
    primary: bool = True  # False for TensorFlow parameter servers


def plan_ranks(instance_count: int, distribution: Any) -> list[Rank]:
    """The processes Azure ML starts for a command job's resources and distribution."""
    instances = max(1, int(instance_count or 1))
    kind = getattr(distribution, "type", None) if distribution is not None else None
    if kind is None:
        ranks = [Rank(n, n, {}, "") for n in range(instances)]
    elif kind in ("mpi", "pytorch"):
        per = int(getattr(distribution, "process_count_per_instance", None) or 1)
        world = instances * per
        port = str(_free_port()) if kind == "pytorch" else ""
        ranks = []
        for rank in range(world):
            node, local = divmod(rank, per)
            if kind == "mpi":
                env = {
                    "OMPI_COMM_WORLD_RANK": str(rank),
                    "OMPI_COMM_WORLD_SIZE": str(world),
                    "OMPI_COMM_WORLD_LOCAL_RANK": str(local),
                    "OMPI_COMM_WORLD_LOCAL_SIZE": str(per),
                    "OMPI_COMM_WORLD_NODE_RANK": str(node),
                }
            else:
                env = {
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port,
                    "WORLD_SIZE": str(world),
                    "RANK": str(rank),
                    "LOCAL_RANK": str(local),
                    "NODE_RANK": str(node),
                    "LOCAL_WORLD_SIZE": str(per),
                }
            ranks.append(Rank(rank, node, env, ""))
    elif kind == "tensorflow":
        ps = int(getattr(distribution, "parameter_server_count", None) or 0)
        workers = int(getattr(distribution, "worker_count", None) or instances)
        ports = [_free_port() for _ in range(ps + workers)]
        cluster = {
            "ps": [f"127.0.0.1:{p}" for p in ports[:ps]],
            "worker": [f"127.0.0.1:{p}" for p in ports[ps:]],
        }
        roles = [("worker", i) for i in range(workers)] + [("ps", i) for i in range(ps)]
        ranks = []
        for rank, (role, index) in enumerate(roles):
            node = rank % instances
            config = {"cluster": cluster, "task": {"type": role, "index": index}, "environment": "cloud"}
            env = {"TF_CONFIG": json.dumps(config)}
            ranks.append(Rank(rank, node, env, "", primary=role == "worker"))
    else:
        raise MlError(f"distribution type {kind!r} cannot run locally (mpi, pytorch, tensorflow)")
    single = len(ranks) == 1
    return [
        Rank(r.rank, r.node, r.env, "std_log.txt" if single else f"std_log_process_{r.rank}.txt", r.primary)
        for r in ranks
    ]


@dataclass
class _Child:
    rank: Rank
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    code: int | None = None
    stopped: float | None = None  # when SIGTERM was sent
    started: float = field(default_factory=time.monotonic)


@dataclass
class ProcessGroup:
    """Runs the ranks of one job to their end; :meth:`cancel` stops them from another thread."""

    command: str
    ranks: list[Rank]
    workdirs: Mapping[int, Path]
    base_env: Mapping[str, str]
    logs_dir: Path
    timeout: float | None = None
    children: list[_Child] = field(default_factory=list)
    canceled: bool = False
    timed_out: bool = False

    def run(self) -> int:
        """Start every rank, wait, and return the exit status (first failure, 124 on timeout)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            for rank in self.ranks:
                if self.canceled:
                    break
                self.children.append(self._start(rank))
            first_failure: int | None = None
            while True:
                for child in self.children:
                    if child.code is None:
                        code = child.popen.poll()
                        if code is not None:
                            child.code = _status(code)
                            log.info("rank %d exited with %d", child.rank.rank, child.code)
                            if child.code and child.rank.primary and first_failure is None:
                                first_failure = child.code
                primaries = [c for c in self.children if c.rank.primary]
                if first_failure is not None or self.canceled or self.timed_out:
                    self._stop(c for c in self.children if c.code is None)
                elif all(c.code is not None for c in primaries):
                    # the workers are done: the parameter servers are stopped, once they have had time to start
                    settled = time.monotonic() - PS_SETTLE_SECONDS
                    self._stop(c for c in self.children if c.code is None and c.started < settled)
                if all(c.code is not None for c in self.children):
                    break
                if self.timeout and time.monotonic() - started > self.timeout and not self.timed_out:
                    self.timed_out = True
                    log.warning("limits.timeout of %s s exceeded: stopping every process", self.timeout)
                    self._stop(c for c in self.children if c.code is None)
                time.sleep(_POLL)
        finally:
            for child in self.children:
                child.log.close()
        if self.timed_out:
            return EXIT_TIMEOUT
        if self.canceled:
            return EXIT_CANCELED
        return first_failure or 0

    def cancel(self) -> None:
        """Stop every process (``az ml job cancel``); :meth:`run` returns 143."""
        self.canceled = True

    def _start(self, rank: Rank) -> _Child:
        env = {**self.base_env, **rank.env}
        output = open(self.logs_dir / rank.log_name, "ab")  # noqa: SIM115 - closed when the run ends
        try:
            # the job's command is a shell command line, as Azure ML runs it
            popen = subprocess.Popen(
                ["bash", "-c", self.command],
                cwd=self.workdirs[rank.node],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            output.close()
            raise MlError(f"cannot start rank {rank.rank}: {exc}") from exc
        return _Child(rank, popen, output)

    def _stop(self, children: Any) -> None:
        for child in children:
            if child.stopped is not None:
                if time.monotonic() - child.stopped > GRACE_SECONDS:
                    _signal(child.popen.pid, signal.SIGKILL)
                continue
            child.stopped = time.monotonic()
            _signal(child.popen.pid, signal.SIGTERM)


def _signal(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_leftovers(workspace_root: Path, run_names: Iterable[str], grace: float = GRACE_SECONDS) -> int:
    """Stop the processes a dead runner's job left running: those whose environment names one of ``run_names``
    (``AZUREML_RUN_ID``) in this workspace (``AZBAI_WORKSPACE``), as :meth:`ProcessGroup.run` gave it to them and
    their children inherit it; never a process that merely sits in the run's folder. Returns how many."""
    import psutil

    from azbai.local.processes import by_environment, stop_processes

    names, root = set(run_names), str(workspace_root)
    victims = by_environment(
        lambda env: env.get("AZUREML_RUN_ID") in names and env.get("AZBAI_WORKSPACE") == root
    )
    with contextlib.suppress(psutil.Error):
        stop_processes(victims, grace)
    return len(victims)
