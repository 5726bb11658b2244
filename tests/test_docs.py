"""The examples of ``docs/api.md`` before its Azure ML section run, in order, as one script, beside the recipes.

``tests/aml/test_docs.py`` runs the section "Azure ML's datastore and estimator API" and what follows it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

DOC = ROOT / "docs/api.md"


AML_SECTION = "## Azure ML's datastore and estimator API"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text.split(AML_SECTION, 1)[0], flags=re.S)


def test_the_api_examples_run(tmp_path: Path) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    script = tmp_path / "examples.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "AZBAI_WORKSPACE": str(tmp_path / "ws")}
    env.pop("AZURE_BATCHAI_STORAGE_ACCOUNT", None)
    try:
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        subprocess.run([sys.executable, "-m", "azbai", "storage", "stop"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unknown-key" in done.stdout and "mnist" in done.stdout
    assert (tmp_path / "migrated/mnist/pipeline.py").is_file()
