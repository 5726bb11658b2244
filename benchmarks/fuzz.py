"""``make fuzz``: feed generated Batch AI configs to validate, migrate and job create; nothing may crash.

Inputs are mutations of the corpus (a seeded mutator: keys dropped, renamed or typo'd, values swapped for other
types, odd strings — ``$VAR``, ``{segment}``, ``..``, absolute paths, unicode, huge and negative numbers) and
hypothesis-generated JSON grafted onto corpus jobs. Each goes through ``azbai.validate``; a file without errors is
migrated (``azbai.migrate``), and a sample of them is created as a local job (``create_job``, its command lines
replaced by ``true``, with a real Azurite). An :class:`azbai.AzbaiError` is an expected answer to a bad input;
any other exception is counted, and its first occurrences are printed.

    python -m benchmarks.fuzz [--inputs 10000] [--jobs 25] [--seed 11]

prints ``fuzz_inputs: N`` and ``fuzz_unexpected_exceptions: K``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ODD_STRINGS = [
    "", " ", "$AZ_BATCHAI_JOB_TEMP_DIR", "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/$RUN_GROUP", "{segment}", "{parameters.x}",
    "../../etc", "/abs/path", "$AZ_BATCHAI_MOUNT_ROOT/", "vidéo 日本", "\u0000", "a" * 5000, "${UNSET}", "$(rm -rf /)",
    "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "https://x.file.core.windows.net/share", "00:00:01", "-1", "1e400",
]  # fmt: skip
ODD_VALUES: list[Any] = [None, True, 0, -1, 10**9, 2**63, 1.5, [], {}, [1, "a"], {"a": {"b": []}}]


def corpus() -> list[dict[str, Any]]:
    from tests.conftest import corpus_files

    found = []
    for path in corpus_files("job"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(data, dict):
            found.append(data)
    return found


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def mutate(base: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One to four random edits of a corpus job."""
    data = copy.deepcopy(base)
    for _ in range(rng.randint(1, 4)):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent, last = _get(data, path[:-1]), path[-1]
        action = rng.randrange(6)
        if action == 0:
            del parent[last]
        elif action == 1 and isinstance(last, str):
            parent[last[:-1] + rng.choice("xsz_") if last else "k"] = parent.pop(last)  # a typo'd key
        elif action == 2:
            parent[last] = rng.choice(ODD_STRINGS)
        elif action == 3:
            parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action == 4 and isinstance(parent[last], list) and parent[last]:
            parent[last].append(copy.deepcopy(rng.choice(parent[last])))  # a duplicate entry
        else:
            target = _get(data, path) if isinstance(_get(data, path), dict) else parent
            if isinstance(target, dict):
                target[
                    rng.choice(["nodeCount", "pathPrefix", "stdOutErrPathPrefix", "environmentVariables"])
                ] = rng.choice(ODD_STRINGS + ODD_VALUES)
    return data


def hypothesis_inputs(bases: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` corpus jobs with a hypothesis-generated JSON value grafted onto a random key."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=40),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=12,
    )
    keys = st.sampled_from(
        ["nodeCount", "stdOutErrPathPrefix", "inputDirectories", "outputDirectories", "mountVolumes",
         "environmentVariables", "secrets", "customToolkitSettings", "constraints", "containerSettings",
         "jobPreparation", "cluster", "toolkit"]
    )  # fmt: skip
    made: list[dict[str, Any]] = []

    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(bases) - 1), keys, json_values)
    def generate(index: int, key: str, value: Any) -> None:
        data = copy.deepcopy(bases[index])
        target = data.get("properties", data) if isinstance(data.get("properties"), dict) else data
        target[key] = value
        made.append(data)

    generate()
    rng = random.Random(seed)
    while len(made) < count:  # hypothesis stops early when its search space is exhausted
        made.append(mutate(rng.choice(bases), rng))
    return made[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=25, help="how many valid inputs to create as local jobs")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    import azbai
    from azbai.facade import secret_values
    from azbai.local.azurite import Emulator
    from azbai.local.service import create_job
    from azbai.local.workspace import Workspace

    rng = random.Random(args.seed)
    bases = corpus()
    generated = int(args.inputs * 0.2)
    first = hypothesis_inputs(bases, generated, args.seed)

    def inputs() -> Iterator[dict[str, Any]]:
        yield from first
        while True:  # mutations until enough inputs were fed (one that is not JSON does not count)
            yield mutate(rng.choice(bases), rng)

    unexpected: list[str] = []
    fed = created = 0

    def feed(path: Path, data: dict[str, Any], number: int, out: Path, workspace: Workspace | None) -> int:
        """validate, then migrate a valid input and (given a workspace) create it as a job; 1 when created."""
        found: list[Any] = []
        if not attempt(f"validate #{number}", lambda: found.append(azbai.validate(path))) or found[0].errors:
            return 0
        attempt(f"migrate #{number}", lambda: azbai.migrate(path, out))
        if workspace is None:
            return 0
        _with_true_commands(data, path)

        def create() -> None:
            plan = azbai.load(path, name=f"fuzz{number}")
            with contextlib.suppress(azbai.AzbaiError):  # a job that fails (JobFailed) is an expected answer
                create_job(workspace, plan, wait=True, secrets=secret_values(plan))

        attempt(f"job create #{number}", create)
        return 1

    def attempt(what: str, call: Callable[[], object]) -> bool:
        try:
            call()
        except azbai.AzbaiError:
            return False
        except Exception as exc:  # what the fuzzer looks for
            unexpected.append(f"{what}: {type(exc).__name__}: {exc}")
            if len(unexpected) <= 5:
                print(f"unexpected {type(exc).__name__} in {what}:", file=sys.stderr)
                traceback.print_exc()
            return False
        return True

    with tempfile.TemporaryDirectory(prefix="azbai-fuzz-") as folder:
        root = Path(folder)
        workspace = Workspace(root / "ws")
        emulator = Emulator(workspace)
        try:
            for number, data in enumerate(inputs()):
                if fed >= args.inputs:
                    break
                path = root / f"in-{number % 50}" / "job.json"
                path.parent.mkdir(exist_ok=True)
                try:
                    text = json.dumps(data, allow_nan=False)
                except (ValueError, OverflowError):
                    continue
                path.write_text(text, encoding="utf-8")
                fed += 1
                create = created < args.jobs and number % 7 == 0
                created += feed(
                    path, data, number, root / "out" / str(number % 50), workspace if create else None
                )
        finally:
            emulator.stop()
    print(f"fuzz_inputs: {fed}")
    print(f"fuzz_jobs_created: {created}")
    print(f"fuzz_unexpected_exceptions: {len(unexpected)}")
    return 1 if unexpected else 0


def _with_true_commands(data: dict[str, Any], path: Path) -> None:
    """A fuzzed job's command lines replaced by ``true``: the fuzzer runs azbai, not the corpus' training scripts."""
    props = data.get("properties", data)
    if not isinstance(props, dict):
        return
    for key, value in list(props.items()):
        if key.endswith("Settings") and isinstance(value, dict):
            for field in list(value):
                if isinstance(value[field], str) and ("ommand" in field or field.endswith("FilePath")):
                    value[field] = "true"
        if key == "jobPreparation" and isinstance(value, dict):
            value["commandLine"] = "true"
    path.write_text(json.dumps(data), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
