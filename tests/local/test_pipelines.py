"""Local pipelines: steps in dependency order through the launcher, reuse, parameters, and the storage trigger."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import azbai
from azbai.errors import JobFailed, PipelineError
from azbai.local import parallel
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.pipelines import PipelineRunner, check_datastore_path, list_runs
from azbai.local.stores import open_store
from azbai.local.trigger import TriggerWatcher
from azbai.local.workspace import Workspace
from tests.conftest import DATA

pytestmark = pytest.mark.azurite
PIPELINE = DATA / "pipeline"


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path / "ws")
    emulator = Emulator(workspace)
    emulator.ensure()
    scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")
    for name in ("produce.py", "consume.py"):
        scripts.upload_file(PIPELINE / name, name)
    try:
        yield workspace
    finally:
        emulator.stop()


def joined(workspace: Workspace) -> list[str]:
    logs = open_store(workspace, DEV_ACCOUNT, share="logs")
    return [e.path for e in logs.list() if e.path.endswith("/result/joined.txt")]


def runner(workspace: Workspace, reuse: bool = True) -> PipelineRunner:
    plan = azbai.load(PIPELINE / "pipeline.json")
    return PipelineRunner(workspace, plan, PIPELINE, reuse=reuse)


def test_steps_run_in_order_and_pass_data(workspace: Workspace) -> None:
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    inbox.write_bytes("incoming/words.txt", b"alpha beta gamma\n")
    seen: list[tuple[str, str]] = []
    run = runner(workspace).run({"greeting": "hi"}, progress=lambda step, state: seen.append((step, state)))
    assert run.state == "succeeded"
    assert seen == [
        ("produce", "running"),
        ("produce", "succeeded"),
        ("consume", "running"),
        ("consume", "succeeded"),
    ]
    assert sorted(p.name for p in run.data_dir("words").iterdir()) == ["000.txt", "001.txt", "002.txt"]
    (path,) = joined(workspace)
    text = open_store(workspace, DEV_ACCOUNT, share="logs").read_bytes(path).decode()
    assert text == "hi alpha\nhi beta\nhi gamma\n"


def test_unchanged_steps_are_reused_and_changes_rerun(workspace: Workspace) -> None:
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    inbox.write_bytes("incoming/words.txt", b"one two\n")
    first = runner(workspace).run()
    second = runner(workspace).run()
    assert [s.state for s in second.steps.values()] == ["reused", "reused"]
    assert sorted(p.name for p in second.data_dir("words").iterdir()) == ["000.txt", "001.txt"]
    third = runner(workspace).run({"greeting": "hey"})  # a parameter changed
    assert [s.state for s in third.steps.values()] == ["succeeded", "succeeded"]
    inbox.write_bytes("incoming/words.txt", b"one two three\n")  # the input data changed
    fourth = runner(workspace).run({"greeting": "hey"})
    assert fourth.steps["produce"].state == "succeeded"
    scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")  # the code changed
    scripts.write_bytes("consume.py", (PIPELINE / "consume.py").read_bytes() + b"\n# changed\n")
    fifth = runner(workspace).run({"greeting": "hey"})
    assert [s.state for s in fifth.steps.values()] == ["reused", "succeeded"]
    no_reuse = runner(workspace, reuse=False).run({"greeting": "hey"})
    assert [s.state for s in no_reuse.steps.values()] == ["succeeded", "succeeded"]
    assert next(r.run_id for r in list_runs(workspace, "words")) == first.run_id


def test_a_parallel_steps_bytecode_is_not_a_change_of_its_code(workspace: Workspace, tmp_path: Path) -> None:
    source = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, source, ignore=shutil.ignore_patterns("__pycache__"))
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    inbox.write_bytes("incoming/words.txt", b"one two\n")
    plan = azbai.load(source / "parallel.json")

    def shout_state() -> str:
        return PipelineRunner(workspace, plan, source).run().steps["shout"].state

    assert shout_state() == "succeeded"
    cache = source / "__pycache__"  # what the workers' imports write where bytecode may be written
    cache.mkdir(exist_ok=True)
    (cache / "entry.cpython-311.pyc").write_bytes(os.urandom(64))
    (source / ".ipynb_checkpoints").mkdir()
    (source / ".ipynb_checkpoints" / "entry-checkpoint.py").write_text("# an editor's copy\n")
    assert shout_state() == "reused"
    (source / "helper.py").write_text("VALUE = 1\n")  # a new module beside the entry script is code
    assert shout_state() == "succeeded"
    (source / "entry.py").write_text((source / "entry.py").read_text() + "\n# changed\n")
    assert shout_state() == "succeeded"
    assert shout_state() == "reused"


def test_a_reused_step_gets_the_outputs_of_the_run_that_made_them_unless_they_changed(
    workspace: Workspace,
) -> None:
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    inbox.write_bytes("incoming/words.txt", b"one two\n")
    first = runner(workspace).run()
    records = {
        json.loads(path.read_text())["step"]: path
        for path in (workspace.pipelines_dir / "words" / "cache").glob("*/done.json")
    }
    done = records["produce"]
    record = json.loads(done.read_text())
    assert record["run"] == first.run_id and set(record["outputs"]["words"]) == {"000.txt", "001.txt"}
    assert not (done.parent / "words").exists()  # the cache names the outputs, it holds no copy of them

    second = runner(workspace).run()
    assert second.steps["produce"].state == "reused"
    assert (second.data_dir("words") / "001.txt").read_text() == "hello two\n"
    # a copy, not the same file: what a later step of one run does to it is not in the other run
    assert (second.data_dir("words") / "001.txt").stat().st_ino != (
        first.data_dir("words") / "001.txt"
    ).stat().st_ino

    with open(first.data_dir("words") / "001.txt", "a") as changed:  # changed in place after the step
        changed.write("and more\n")
    third = runner(workspace).run()
    assert third.steps["produce"].state == "succeeded"
    assert (third.data_dir("words") / "001.txt").read_text() == "hello two\n"

    shutil.rmtree(third.path)  # the run the cache now names is gone
    fourth = runner(workspace).run()
    assert fourth.steps["produce"].state == "succeeded"
    assert sorted(p.name for p in fourth.data_dir("words").iterdir()) == ["000.txt", "001.txt"]
    assert runner(workspace).run().steps["produce"].state == "reused"


def test_a_failing_step_stops_the_pipeline(workspace: Workspace) -> None:
    with pytest.raises(PipelineError, match="parameter 'text': nothing at"):
        runner(workspace).run({"text": "incoming/missing.txt"})  # nothing there: no step starts
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    inbox.write_bytes("incoming/bad.txt", b"x\n")
    scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")
    scripts.write_bytes("consume.py", b"import sys; sys.exit(7)\n")
    with pytest.raises(JobFailed, match=r"step 'consume'.*exit code 7"):
        runner(workspace).run({"text": "incoming/bad.txt"})
    run = list_runs(workspace, "words")[-1]
    assert (
        run.state == "failed"
        and run.steps["consume"].state == "failed"
        and run.steps["produce"].state == "succeeded"
    )


def test_parameters_are_checked(workspace: Workspace) -> None:
    with pytest.raises(PipelineError, match="unknown parameter"):
        runner(workspace).run({"colour": "blue"})
    with pytest.raises(PipelineError, match=r"not a datastore path|must not contain"):
        runner(workspace).run({"text": "../../etc/passwd"})


@pytest.mark.parametrize(
    "value",
    [
        "../secret.txt",
        "incoming/../../x",
        "/etc/passwd",
        "a;rm -rf ~",
        "$(touch /tmp/pwned)",
        "`id`",
        "a\nb",
        "",
        "a//b",
    ],
)
def test_malicious_paths_are_rejected(value: str) -> None:
    with pytest.raises(PipelineError):
        check_datastore_path(value, what="test")


def test_the_trigger_runs_new_blobs_once_and_rejects_bad_ones(workspace: Workspace, tmp_path: Path) -> None:
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    plan = azbai.load(PIPELINE / "pipeline.json")
    watcher = TriggerWatcher(workspace, plan, PIPELINE)
    assert watcher.poll() == []  # nothing there yet
    inbox.write_bytes("incoming/first.txt", b"red green\n")
    inbox.write_bytes("incoming/ignored.bin", b"not a .txt\n")
    (fired,) = watcher.poll()
    assert (
        fired.parameter == "incoming/first.txt" and fired.run is not None and fired.run.state == "succeeded"
    )
    assert watcher.poll() == []  # seen: not run twice
    again = TriggerWatcher(workspace, plan, PIPELINE)  # a restarted watcher remembers
    assert again.poll() == []
    inbox.write_bytes("incoming/first.txt", b"red green blue\n")  # changed content fires again
    (changed,) = again.poll()
    assert changed.run is not None
    inbox.write_bytes("incoming/bad name;rm -rf.txt", b"x\n")
    (rejected,) = again.poll()
    assert rejected.run is None and "not a datastore path" in (rejected.error or "")


def test_trigger_files_with_content(workspace: Workspace, tmp_path: Path) -> None:
    """The Batch AI architecture's trigger file: its content names what to process; the content is untrusted."""
    spec = json.loads((PIPELINE / "pipeline.json").read_text())
    spec["trigger"] = {"parameter": "text", "containerName": "inbox", "path": "triggers", "pattern": "trigger*.txt",
                       "use": "content"}  # fmt: skip
    folder = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, folder)
    (folder / "pipeline.json").write_text(json.dumps(spec))
    plan = azbai.load(folder / "pipeline.json")
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    inbox.write_bytes("videos/words.txt", b"cat dog\n")
    inbox.write_bytes("triggers/trigger_0.txt", b"videos/words.txt\n")
    inbox.write_bytes("triggers/trigger_1.txt", b"../../escape\n")
    inbox.write_bytes("triggers/trigger_2.txt", b"videos/x.txt; rm -rf /\n")
    inbox.write_bytes("triggers/trigger_3.txt", b"$(curl evil)\n")
    fired = {f.blob: f for f in TriggerWatcher(workspace, plan, folder).poll()}
    assert fired["triggers/trigger_0.txt"].run is not None
    for bad in ("triggers/trigger_1.txt", "triggers/trigger_2.txt", "triggers/trigger_3.txt"):
        assert fired[bad].run is None and fired[bad].error


def test_a_damaged_reuse_record_runs_the_step(workspace: Workspace) -> None:
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    inbox.write_bytes("incoming/words.txt", b"one two\n")
    runner(workspace).run()
    records = list((workspace.pipelines_dir / "words" / "cache").glob("*/done.json"))
    for text in ("[1, 2]", '{"outputs": 3}', "{", '{"run": "../..", "step": "x", "outputs": {}}'):
        for path in records:
            path.write_text(text)
        run = runner(workspace).run()
        assert [s.state for s in run.steps.values()] == ["succeeded", "succeeded"], text
    for (
        path
    ) in records:  # the run named is gone: the step with outputs runs, the one without has none to miss
        path.write_text('{"run": "gone", "step": "x", "outputs": {"words": {}}}')
    run = runner(workspace).run()
    assert [s.state for s in run.steps.values()] == ["succeeded", "reused"]


def _live_children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.skipif(
    not parallel._ForkServer.usable() or not hasattr(os, "pidfd_open"),
    reason="no fork server started ahead here",
)
def test_a_watchers_runs_fork_their_fork_servers_from_one_zygote(workspace: Workspace) -> None:
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    plan = azbai.load(PIPELINE / "parallel.json")
    with TriggerWatcher(workspace, plan, PIPELINE) as watcher:
        zygotes = []
        for index, words in enumerate((b"red green\n", b"blue\n")):
            inbox.write_bytes(f"incoming/words-{index}.txt", words)
            (fired,) = watcher.poll()
            assert fired.run is not None and fired.run.state == "succeeded", fired.error
            (log,) = (fired.run.path / "steps" / "shout" / "logs").rglob("stdout-0.txt")
            assert "started ahead of the step, which imported the entry script" in log.read_text()
            zygotes += watcher.pool.pids()
            # kept for the next run; the fork server it forked for this one ended with the step
            assert _live_children(zygotes[-1]) == []
        assert len(set(zygotes)) == 1
    (zygote,) = set(zygotes)
    assert not Path(f"/proc/{zygote}").exists()  # ended and reaped with the watcher
    assert watcher.pool.pids() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts need Linux")
def test_plain_python_steps_and_their_launchers_start_warm_from_a_zygote_that_learns_imports(
    workspace: Workspace, tmp_path: Path
) -> None:
    from azbai.local.warm import CommandPool

    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    inbox.write_bytes("incoming/words.txt", b"alpha beta\n")
    # consume.py as it is, then what started it: its parent, and whether the zygote already held decimal
    # and its launcher's parent, read from the job's record (the launcher runs while its job does)
    probe = (PIPELINE / "consume.py").read_text() + (
        "import decimal, json, time\n"
        "record = os.path.join(os.environ['AZ_BATCHAI_JOB_MOUNT_ROOT'], '..', '..', '..', '..', 'record.json')\n"
        "for _ in range(100):\n"
        "    launcher = json.load(open(record)).get('launcher_pid')\n"
        "    if launcher:\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "stat = open(f'/proc/{launcher}/stat').read().rsplit(')', 1)[1].split()\n"
        "with open(os.path.join(out, 'started.json'), 'w') as f:\n"
        "    json.dump({'ppid': os.getppid(), 'decimal': 'decimal' in before, 'launcher_ppid': int(stat[1])}, f)\n"
    )
    probe = probe.replace(
        '"""Join the word files back."""',
        '"""Join the word files back."""\nimport sys\nbefore = set(sys.modules)',
    )
    (tmp_path / "consume.py").write_text(probe)
    open_store(workspace, DEV_ACCOUNT, share="scripts").upload_file(tmp_path / "consume.py", "consume.py")
    logs = open_store(workspace, DEV_ACCOUNT, share="logs")
    pool = CommandPool()
    try:
        seen = []
        for _ in range(2):
            run = PipelineRunner(
                workspace, azbai.load(PIPELINE / "pipeline.json"), PIPELINE, reuse=False, commands=pool
            ).run()
            assert run.state == "succeeded"
            (path,) = [
                e.path
                for e in logs.list()
                if e.path.endswith("/result/started.json") and run.run_id in e.path
            ]
            seen.append(json.loads(logs.read_bytes(path)))
        # the job was forked by the pool's zygote, which learned decimal from the first run
        assert all(s["ppid"] in pool.pids() and s["launcher_ppid"] in pool.pids() for s in seen)
        assert [s["decimal"] for s in seen] == [False, True]
    finally:
        pool.close()
    assert pool.pids() == []
