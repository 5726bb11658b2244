"""Bad configs are golden too: each file's exact diagnostics (regenerate with ``pytest --update-golden``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import azbai
from tests.conftest import DATA

BAD = sorted((DATA / "bad").glob("*.json"))


def render(path: Path) -> str:
    lines = [str(d) for d in azbai.validate(path).diagnostics]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_diagnostics_match_the_golden_file(path: Path, update_golden: bool) -> None:
    expected_file = path.with_suffix(".expected")
    actual = render(path)
    if update_golden:
        expected_file.write_text(actual)
    assert actual == expected_file.read_text()
    if not path.stem.startswith("warn_"):
        assert any(line.startswith("error: ") for line in actual.splitlines()), (
            "a bad config must have an error"
        )


def test_secret_values_never_appear_in_diagnostics() -> None:
    text = "".join(render(p) for p in BAD)
    for secret in ("hunter2-secret-value", "12345", "ngc-api-key-secret-value", "SECRETSIGNATURE"):
        assert secret not in text
