"""Run every benchmark module and print ``name: value`` lines.

Each module in this package defines ``run() -> dict[str, float]``. The machines are shared and noisy, so each
benchmark measures its ratios side by side in one run and reports medians. ``python -m benchmarks NAME…`` runs only
the named modules.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    wanted = [n if n.startswith("bench_") else f"bench_{n}" for n in argv] or names
    for name in wanted:
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.perf_counter()
        results = module.run()
        for key, value in results.items():
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}", flush=True)
        print(f"# {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
