"""A warm-start test job: what a Python process can see of how it was started, as JSON on stdout."""

import json
import os
import signal
import sys

handlers = {
    name: str(signal.getsignal(getattr(signal, name)))
    for name in ("SIGINT", "SIGTERM", "SIGPIPE", "SIGCHLD", "SIGHUP", "SIGUSR1")
}
report = {
    "argv": sys.argv,
    "path0": sys.path[0],
    "file": __file__,
    "name": __name__,
    "cwd": os.getcwd(),
    "env": dict(os.environ),
    "own_session": os.getsid(0) == os.getpid() == os.getpgid(0),
    "stdin": sys.stdin.read(),
    "stdout_fd": sys.stdout.fileno(),
    "line_buffering": [sys.stdout.line_buffering, sys.stderr.line_buffering],
    "encoding": [sys.stdout.encoding, sys.stdout.errors, sys.stderr.errors],
    "handlers": handlers,
    "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "open_fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    "main_module": type(sys.modules["__main__"].__loader__).__name__,
}
json.dump(report, sys.stdout, sort_keys=True)
print()
print(json.dumps({"ppid": os.getppid(), "decimal": "decimal" in sys.modules}), file=sys.stderr)
import decimal  # noqa: E402,F401  # for the next job: the zygote learns it
