"""Hostile or odd input: secrets of the wrong type, huge or fractional counts, deep nesting, SAS tokens in commands.

Each is reported at its JSON path, without a traceback, and never by quoting a secret.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import azbai
from azbai.errors import SpecError
from azbai.source.pipeline_spec import load_pipeline_spec
from azbai.source.reader import load_cluster, load_job

BASE = {
    "nodeCount": 1,
    "customToolkitSettings": {"commandLine": "echo hi"},
    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
}
SHARE = {"azureFileUrl": "https://acct.file.core.windows.net/logs", "relativeMountPath": "logs"}


def write(tmp_path: Path, properties: dict[str, Any], name: str = "job.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"properties": {**BASE, **properties}}))
    return path


def report(path: Path, **options: Any) -> list[tuple[str, str, str, bool]]:
    return [(d.path, d.code, d.message, d.is_error) for d in azbai.validate(path, **options).diagnostics]


@pytest.mark.parametrize(
    "properties",
    [
        {"mountVolumes": {"azureFileShares": [{**SHARE, "credentials": "LEAKED-KEY=="}]}},
        {"mountVolumes": {"azureFileShares": [{**SHARE, "credentials": ["LEAKED-KEY=="]}]}},
        {"mountVolumes": {"azureFileShares": [{**SHARE, "credentials": {"accountKeySecretReference": "LEAKED"}}]}},
        {"secrets": ["LEAKED-TOKEN"]},
        {"secrets": "LEAKED-TOKEN"},
        {"secrets": [{"name": "T", "valueSecretReference": "LEAKED-REF"}]},
        {"secrets": [{"name": "T", "value": ["LEAKED-TOKEN"]}]},
        {"containerSettings": {"imageSourceRegistry": {"image": "x", "credentials": "user:LEAKED-PASSWORD"}}},
        {"containerSettings": {"imageSourceRegistry": {"image": "x", "credentials": {
            "username": "u", "passwordSecretReference": "LEAKED-PASSWORD"}}}},
    ],
)  # fmt: skip
def test_a_secret_of_the_wrong_type_is_reported_without_its_value(
    tmp_path: Path, properties: dict[str, Any]
) -> None:
    found = report(write(tmp_path, properties))
    assert any(error and code == "wrong-type" for _, code, _, error in found), found
    assert "LEAKED" not in repr(found)
    assert not any(code == "missing-key" for _, code, _, _ in found), found  # it was given, if badly


def test_numbers_the_cli_converted_are_a_warning_as_it_read_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "nodeCount": 2.0,
            "secrets": [{"name": "T", "value": 1234}],
            "mountVolumes": {"azureFileShares": [{**SHARE, "credentials": {"accountKey": 12345}}]},
            "containerSettings": {
                "imageSourceRegistry": {"image": "x", "credentials": {"username": "u", "password": 98765}}
            },
        },
    )
    found = report(path)
    assert not [f for f in found if f[3]], found
    tolerated = {p for p, code, _, _ in found if code == "cli-tolerance"}
    assert {
        "properties.nodeCount",
        "properties.secrets[0].value",
        "properties.mountVolumes.azureFileShares[0].credentials.accountKey",
        "properties.containerSettings.imageSourceRegistry.credentials.password",
    } <= tolerated
    for secret in ("1234", "12345", "98765"):
        assert secret not in repr(found)
    job = load_job(path)
    assert job.properties.node_count == 2
    assert job.properties.secrets[0].value is not None and job.properties.secrets[0].value.reveal() == "1234"
    registry = job.properties.container_settings.image_source_registry.credentials  # type: ignore[union-attr]
    assert registry is not None and registry.password is not None and registry.password.reveal() == "98765"


def test_a_fractional_count_is_an_error(tmp_path: Path) -> None:
    found = report(write(tmp_path, {"nodeCount": 2.5}))
    assert [(p, c) for p, c, _, error in found if error] == [("properties.nodeCount", "wrong-type")]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("nodeCount", "9" * 5000),
        ("nodeCount", 10**30),
        ("nodeCount", 2**31),
        ("nodeCount", "-" + "9" * 5000),
    ],
)
def test_a_count_beyond_int32_is_out_of_range_at_its_path(tmp_path: Path, key: str, value: Any) -> None:
    found = report(write(tmp_path, {key: value}))
    assert [(p, c) for p, c, _, error in found if error] == [(f"properties.{key}", "out-of-range")]
    assert all(len(message) < 300 for _, _, message, _ in found)


def test_every_integer_field_has_an_int32_bound(tmp_path: Path) -> None:
    huge = "1" + "0" * 4400
    toolkit = {"customMpiSettings": {"commandLine": "x", "processCount": huge}}
    properties = {**{k: v for k, v in BASE.items() if k != "customToolkitSettings"}, **toolkit}
    job = tmp_path / "mpi.json"
    job.write_text(json.dumps({"properties": properties}))
    assert [(p, c) for p, c, _, e in report(job) if e] == [
        ("properties.customMpiSettings.processCount", "out-of-range")
    ]
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps({"properties": {"vmSize": "STANDARD_NC6", "scaleSettings": {
        "autoScale": {"minimumNodeCount": 0, "maximumNodeCount": huge, "initialNodeCount": 2**40}}}}))  # fmt: skip
    with pytest.raises(SpecError) as caught:
        load_cluster(cluster)
    assert sorted(d.path for d in caught.value.diagnostics if d.is_error) == [
        "properties.scaleSettings.autoScale.initialNodeCount",
        "properties.scaleSettings.autoScale.maximumNodeCount",
    ]
    pipeline = tmp_path / "pipeline.json"
    pipeline.write_text(json.dumps({"name": "p", "steps": [{"name": "s", "parallel": {
        "entryScript": "e.py", "input": "i", "output": "o", "miniBatchSize": huge}}],
        "parameters": []}))  # fmt: skip
    with pytest.raises(SpecError) as caught:
        load_pipeline_spec(pipeline)
    errors = [(d.path, d.code) for d in caught.value.diagnostics if d.is_error]
    assert ("steps[0].parallel.miniBatchSize", "out-of-range") in errors


def test_a_too_deep_document_is_refused_before_anything_reads_it(tmp_path: Path) -> None:
    job = write(tmp_path, {})
    deep = tmp_path / "deep.json"
    deep.write_text('{"properties":{"x":' + "[" * 900 + "]" * 900 + "}}")
    found = report(job, merge=[deep])
    assert [(p, c) for p, c, _, error in found if error] == [("properties.x[0]", "too-deep")]
    inline = tmp_path / "inline.json"
    inline.write_text(json.dumps({"properties": BASE})[:-2] + ', "x": ' + '{"a": ' * 900 + "1" + "}" * 902)
    assert [c for _, c, _, error in report(inline) if error] == ["too-deep"]


def test_a_sas_token_in_a_command_line_or_a_path_is_a_warning_that_does_not_quote_it(tmp_path: Path) -> None:
    url = "https://acct.blob.core.windows.net/data/x.zip?sv=2020-08-04&sig=SAS-SIGNATURE-VALUE"
    path = write(
        tmp_path,
        {
            "customToolkitSettings": {"commandLine": f"curl '{url}' -o x.zip"},
            "inputDirectories": [
                {"id": "D", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/d?sv=1&sig=SAS-SIGNATURE-VALUE"}
            ],
            "jobPreparation": {"commandLine": f"wget {url}"},
            "environmentVariables": [{"name": "URL", "value": url}],
        },
    )
    found = report(path)
    assert {p for p, code, _, _ in found if code == "sas-token"} == {
        "properties.customToolkitSettings.commandLine",
        "properties.inputDirectories[0].path",
        "properties.jobPreparation.commandLine",
        "properties.environmentVariables[0].value",
    }
    assert "SAS-SIGNATURE-VALUE" not in repr(found)
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps({"properties": {"vmSize": "STANDARD_NC6", "nodeSetup": {"setupTask": {
        "commandLine": f"wget {url}", "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/logs"}}}}))  # fmt: skip
    warnings = load_cluster(cluster).diagnostics
    assert [d.path for d in warnings if d.code == "sas-token"] == [
        "properties.nodeSetup.setupTask.commandLine"
    ]


def test_a_quoted_value_with_a_sas_token_is_shown_without_its_signature(tmp_path: Path) -> None:
    bad = "https://a.b/c?sv=1&sig=SAS-SIGNATURE-VALUE"
    found = report(write(tmp_path, {"inputDirectories": [{"id": "D", "path": bad}]}))
    assert any(p == "properties.inputDirectories[0].path" and error for p, _, _, error in found)
    assert "SAS-SIGNATURE-VALUE" not in repr(found)


def test_a_parallel_step_over_a_parameter_is_an_error_at_its_path(tmp_path: Path) -> None:
    """A parallel step runs over files a step wrote; over a data-path parameter no target could run it."""
    (tmp_path / "split.job.json").write_text(json.dumps({"properties": BASE}))
    pipeline = tmp_path / "pipeline.json"
    parameter = {
        "name": "video",
        "type": "data_path",
        "accountName": "acct",
        "containerName": "media",
        "default": "a.mp4",
    }
    parallel = {"entryScript": "e.py", "input": "parameters.video", "output": "styled"}
    pipeline.write_text(
        json.dumps(
            {"name": "p", "parameters": [parameter], "steps": [{"name": "style", "parallel": parallel}]}
        )
    )
    with pytest.raises(SpecError) as caught:
        load_pipeline_spec(pipeline)
    [error] = [d for d in caught.value.diagnostics if d.is_error]
    assert (error.path, error.code) == ("steps[0].parallel.input", "wrong-type")
    assert "not over a parameter ('parameters.video')" in error.message
