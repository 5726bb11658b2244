"""The command line: exit codes, messages a person can act on, nothing written on error, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import CORPUS, DATA

QUICKSTART = CORPUS / "recipes/CNTK/CNTK-GPU-Python/job.json"


def azbai(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "azbai", *args], capture_output=True, text=True, cwd=cwd)


def test_validate_a_good_job() -> None:
    result = azbai("validate", str(QUICKSTART))
    assert result.returncode == 0
    assert "valid (0 error(s), 3 warning(s))" in result.stdout
    assert "unresolved-placeholder" in result.stderr


def test_validate_json_output() -> None:
    result = azbai("validate", str(DATA / "bad/wrong_types.json"), "--json")
    assert result.returncode == 1
    items = json.loads(result.stdout)
    assert {"file", "severity", "path", "code", "message"} <= set(items[0])
    assert items[0]["path"] == "properties.nodeCount"


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    bad = CORPUS / "history/2018-05-15_3d7b5583/recipes/TensorFlow/TensorFlow-GPU/job.json"
    result = azbai("migrate", str(bad), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "(line 7, column 9): invalid JSON" in result.stderr
    assert "trailing comma" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_errors_write_nothing(tmp_path: Path) -> None:
    for bad in sorted((DATA / "bad").glob("*.json")):
        if bad.stem.startswith("warn_"):
            continue
        out = tmp_path / bad.stem
        result = azbai("migrate", str(bad), "-o", str(out))
        assert result.returncode == 1, bad
        assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
        assert "Traceback" not in result.stderr
        assert not out.exists()


def test_missing_file_and_bad_flags(tmp_path: Path) -> None:
    result = azbai("migrate", str(tmp_path / "nope.json"))
    assert (
        result.returncode == 1 and "Error: cannot read" in result.stderr and "Traceback" not in result.stderr
    )
    result = azbai("migrate", str(QUICKSTART), "--mount", "external=ftp://x/y", "-o", str(tmp_path / "o"))
    assert result.returncode == 1 and "expected NAME=afs://ACCOUNT/SHARE" in result.stderr
    result = azbai("migrate", str(QUICKSTART), "--inputs", "sideways")
    assert result.returncode == 2 and "Invalid value for '--inputs'" in result.stderr


def test_migrate_writes_every_file(tmp_path: Path) -> None:
    result = azbai("migrate", str(QUICKSTART), "-o", str(tmp_path / "out"), "-n", "quickstart", "-e", "mnist")
    assert result.returncode == 0, result.stderr
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    # --target all (the default): the SDK v1 files and the v2/ folder
    assert names == [
        "MIGRATION.md", "migrate.ipynb", "pipeline.py", "plan.json", "snapshot/azbai_job.json", "snapshot/azbai_launcher.py",
        "v2/computes/gpu-cluster.yml", "v2/datastores/data_blob.yml", "v2/datastores/logs_share.yml",
        "v2/datastores/scripts_share.yml", "v2/job.yml", "v2/submit.py",
    ]  # fmt: skip
    plan = json.loads((tmp_path / "out/plan.json").read_text())
    assert (plan["name"], plan["experiment"]) == ("quickstart", "mnist")
    notebook = json.loads((tmp_path / "out/migrate.ipynb").read_text())
    assert notebook["nbformat"] == 4 and any(
        "import pipeline" in "".join(c["source"]) for c in notebook["cells"]
    )
    assert "end of support on 2026-06-30" in (tmp_path / "out/MIGRATION.md").read_text()
    assert "end of support on 2026-06-30" in (tmp_path / "out/pipeline.py").read_text()
    assert "STANDARD_NC6" in (tmp_path / "out/MIGRATION.md").read_text()
    # default output directory
    result = azbai("migrate", str(QUICKSTART), cwd=tmp_path)
    assert result.returncode == 0 and (tmp_path / "migrated/cntk-gpu-python/pipeline.py").is_file()


def test_migrate_does_not_import_azureml(tmp_path: Path) -> None:
    code = (
        "import sys; from azbai.cli import main\n"
        f"sys.argv = ['azbai', 'migrate', {str(QUICKSTART)!r}, '-o', {str(tmp_path)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert not [m for m in sys.modules if m.startswith('azureml')], 'migrate imported azureml'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_migrated_files_get_the_mode_a_new_file_gets(tmp_path: Path) -> None:
    # 0o666 less the umask, like any file the user's tools write (they were 0o600: the temporary file's mode
    # outlived the rename, so nobody else on the team could read a migration).
    result = subprocess.run(
        ["sh", "-c", 'umask 022 && exec "$0" -m azbai migrate "$1" -o "$2"', sys.executable, str(QUICKSTART),
         str(tmp_path / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}
