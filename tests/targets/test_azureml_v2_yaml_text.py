"""The v2 YAML emitter: every string it writes reads back as that same string, through PyYAML and azure-ai-ml."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azbai.targets.azureml_v2 import yaml_text
from azbai.targets.azureml_v2.yaml_text import dump, scalar

yaml = pytest.importorskip("yaml")

_BOOLEANS = [
    case
    for word in ("yes", "no", "on", "off", "y", "n", "true", "false")
    for case in {word, word.upper(), word.capitalize(), word[0] + word[1:].upper()}
]
#: strings a YAML 1.1 reader (PyYAML) or a YAML 1.2 one types as something other than a string, or cannot read plain
TRICKY = [
    # numbers PyYAML reads: binary, signed hex, hex with underscores, sexagesimal ints and floats
    "0b101", "-0b1", "+0b1_1", "-0x1F", "+0x1f", "0x_1f", "0x1f", "1:30.5", "-1:30", "+1:30", "190:20:30.15", "1:30",
    "12:61", "1:2:3", "0:0", "0o17", "-0o17", "017", "08", "09.5", "1e3", "1E+3", "1.0e-3", "1_000", "1_0.5", "._5",
    "0.", ".5", "+1", "-1", "0_0", ".inf", "-.inf", "+.INF", ".nan", ".NaN", ".NAN", "1.", "1__2",
    # dates and timestamps, with and without zero padding
    "2018-05-01", "2018-5-1", "2018-5-1T1:00:00", "2018-05-01t01:00:00.5Z", "2018-05-01 01:00:00 +01:00",
    "2018-05-01T01:00:00-5", "12:30:00", "1:00:00",
    # null and YAML's own tags
    "~", "null", "Null", "NULL", "nULL", "", "=", "<<", "!", "&", "*",
    *_BOOLEANS,
    # blanks, comments, indicators, flow and block syntax
    " a", "a ", " ", "\t", "a\tb", "#x", "a #b", "a# b", "a: b", "a:b", "key:", "a:", "- a", "-", "--", "---", "...",
    "- ", "? a", "?", "[a]", "[", "]", "{a: 1}", "{", "}", ",", "a, b", "*a", "&a", "!tag", "!!str", "%x", "@x", "`x",
    "|", ">", "'", '"', "'a'", '"a"', "a'b", 'a"b', "\\", "a\\nb",
    # lines
    "a\nb", "a\n", "\na", "a\r\nb", "a\x85b", "a\u2028b", "\ufeffa", "\x7f", "é", "日本", "${{inputs.x}}",
    # what azbai writes plainly, and must go on writing plainly
    "azureml:gpu-cluster", "azureml://datastores/s/paths/a/b", "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
    "python=3.10", "a.b-c_d/e", "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest", "x@1", "v1+2",
]  # fmt: skip


def pyyaml_resolves(value: str) -> str:
    """What PyYAML itself types ``value`` as, written plainly."""
    return str(yaml.resolver.Resolver().resolve(yaml.ScalarNode, value, (True, False)))


def test_the_copied_resolvers_are_pyyamls() -> None:
    theirs: dict[tuple[str, str, int], set[str]] = {}
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items():
        for tag, pattern in resolvers:
            theirs.setdefault((tag, pattern.pattern, pattern.flags), set()).add(first or "")
    ours = {(tag, p.pattern, p.flags): set(first) | ({""} if "null" in tag else set()) for tag, p, first in yaml_text._PYYAML_IMPLICIT}  # fmt: skip
    assert ours == theirs


@pytest.mark.parametrize("value", TRICKY, ids=ascii)
def test_a_tricky_string_reads_back_as_itself(value: str) -> None:
    text = scalar(value)
    assert yaml.safe_load(f"k: {text}\n") == {"k": value}, text
    assert yaml.safe_load(dump({"m": {value: value}, "l": [value]})) == {"m": {value: value}, "l": [value]}
    if text == value:  # written plainly: PyYAML types it as a string, and so would a YAML 1.2 reader
        assert pyyaml_resolves(value) == yaml_text.STR_TAG
        assert not re.fullmatch(r"(?i)0o[0-7]+|[-+]?(\.\d+|\d+\.?\d*)([eE][-+]?\d+)?|y|n", value)


def test_plain_stays_plain() -> None:
    """No needless quotes: what needs none is written as it is."""
    for value in TRICKY[TRICKY.index("azureml:gpu-cluster") :]:
        assert scalar(value) == value
    assert scalar("0b2") == "0b2" and scalar("1:30x") == "1:30x" and scalar("2018-5-1x") == "2018-5-1x"


_ALPHABET = "0123456789abefxoTtYyNn_.:+-eE ~#@*&!%`'\"[]{},|>=<?\\/\n\t"


@given(st.text(alphabet=_ALPHABET, max_size=12))
def test_every_string_reads_back_as_itself(value: str) -> None:
    text = scalar(value)
    assert yaml.safe_load(f"k: {text}\n") == {"k": value}, text
    if text == value:
        assert pyyaml_resolves(value) == yaml_text.STR_TAG


@given(st.text(min_size=1, max_size=12))
def test_the_tag_is_the_one_pyyaml_gives(value: str) -> None:
    assert yaml_text.pyyaml_tag(value) == pyyaml_resolves(value)


def test_azure_ai_ml_reads_them_back_as_strings(tmp_path: Path) -> None:
    """An environment variable of a command job and a literal pipeline input, loaded by azure-ai-ml's load_job."""
    ml = pytest.importorskip("azure.ai.ml")
    values = [v for v in TRICKY if v.strip() and "\r" not in v and "\x85" not in v and "\u2028" not in v]
    names = {f"v{i}": v for i, v in enumerate(values)}
    command = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json",
        "type": "command",
        "command": "echo",
        "environment": {"image": "python:3.11"},
        "compute": "azureml:cpu",
        "environment_variables": names,
    }
    (tmp_path / "job.yml").write_text(dump(command))
    pipeline: dict[str, Any] = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json",
        "type": "pipeline",
        "inputs": names,
        "jobs": {
            "a": {
                "type": "command",
                "command": "echo ${{inputs.x}}",
                "environment": {"image": "python:3.11"},
                "compute": "azureml:cpu",
                "inputs": {"x": "${{parent.inputs.v0}}"},
            }
        },
    }
    (tmp_path / "pipeline.yml").write_text(dump(pipeline))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # azure-ai-ml's experimental-class warnings
        job = ml.load_job(tmp_path / "job.yml")
        loaded = ml.load_job(tmp_path / "pipeline.yml")
    assert dict(job.environment_variables) == names
    assert {name: loaded.inputs[name]._data for name in names} == names
