"""What ``azbai az`` records and prints of a job.json or cluster.json: the model's keys, no secrets, no SAS tokens."""

from __future__ import annotations

import json

from azbai.az.shapes import modelled, node_setup, sanitized, stored
from azbai.source.model import JobProperties, NodeSetup

LEAKS = ("SAS_LEAK", "KEY_LEAK", "SECRET_LEAK", "IKEY_LEAK", "PASSWORD_LEAK", "RAW_LEAK")


def test_stored_keeps_the_model_s_keys_and_no_secret() -> None:
    raw = {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": "echo hi"},
        "stdOutErrPathPrefix": "/tmp/logs",
        "mountVolumes": {"azureFileShares": [{
            "azureFileUrl": "https://acct.file.core.windows.net/logs?sv=1&sig=SAS_LEAK",
            "relativeMountPath": "logs", "credentials": {"acountKey": "KEY_LEAK", "accountKey": "KEY_LEAK"}}]},
        "secrets": [{"name": "T", "value": "SECRET_LEAK", "Value": "SECRET_LEAK"}, "RAW_LEAK"],
        "containerSettings": {"imageSourceRegistry": {"image": "x", "credentials": {
            "username": "u", "password": "PASSWORD_LEAK"}}},
        "environmentVariables": [{"name": "MODE", "value": "train", "extra": {"x": "RAW_LEAK"}}],
        "unknownKey": "RAW_LEAK",
    }  # fmt: skip
    kept = stored(JobProperties, raw)
    text = json.dumps(kept)
    for leak in LEAKS:
        assert leak not in text, leak
    assert (
        kept["mountVolumes"]["azureFileShares"][0]["azureFileUrl"]
        == "https://acct.file.core.windows.net/logs"
    )
    assert kept["secrets"] == [{"name": "T", "value": None}, None]
    assert kept["environmentVariables"] == [{"name": "MODE", "value": "train"}]
    assert kept["customToolkitSettings"] == {"commandLine": "echo hi"}
    shown = modelled(JobProperties, kept)
    assert shown["nodeCount"] == 1 and shown["containerSettings"]["imageSourceRegistry"]["credentials"] == {
        "password": None,
        "passwordSecretReference": None,
        "username": "u",
    }


def test_a_cluster_s_node_setup_is_shown_without_keys_even_from_an_old_record() -> None:
    old_record = {
        "setupTask": {"commandLine": "echo", "stdOutErrPathPrefix": "/tmp", "stdOutErrPathSuffix": "s/u",
                      "secrets": [{"name": "S", "value": "SECRET_LEAK"}]},
        "mountVolumes": {"azureFileShares": [{"azureFileUrl": "https://a.file.core.windows.net/s?sig=SAS_LEAK",
                                              "relativeMountPath": "s", "credentials": {"accountKey": "KEY_LEAK"}}]},
        "performanceCountersSettings": {"appInsightsReference": {"component": {"id": "/c"},
                                                                 "instrumentationKey": "IKEY_LEAK"}},
    }  # fmt: skip
    shown = node_setup(old_record)
    text = json.dumps(shown)
    for leak in LEAKS:
        assert leak not in text, leak
    assert shown["setupTask"]["stdOutErrPathSuffix"] == "s/u"
    assert shown["performanceCountersSettings"]["appInsightsReference"]["instrumentationKey"] is None
    assert json.dumps(stored(NodeSetup, old_record)).count("LEAK") == 0


def test_sanitized_hides_secrets_at_any_depth_without_recursing() -> None:
    deep: object = {"accountKey": "KEY_LEAK", "url": "https://x/y?sig=SAS_LEAK"}
    for _ in range(5000):
        deep = {"a": [deep]}
    clean = sanitized({"credentials": {"password": "PASSWORD_LEAK", "Acountkey": "KEY_LEAK"},
                       "secrets": [{"name": "T", "Value": "SECRET_LEAK"}], "deep": deep})  # fmt: skip
    strings, stack = [], [clean]
    while stack:  # json.dumps would recurse too deeply
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        else:
            strings.append(str(item))
    assert "T" in strings and "https://x/y" in strings
    assert not [s for s in strings if "LEAK" in s]
