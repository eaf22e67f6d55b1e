"""Unit tests of the pod-spec-to-process translation (no cluster)."""

from __future__ import annotations

import base64

import pytest

from cardeval_testbed.podspec import (
    ConfigError,
    MountMap,
    argv_for,
    container_env,
    expand,
    extended_requests,
    field_value,
    resource_value,
)

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"},
                 "annotations": {"batch.kubernetes.io/job-completion-index": "3"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "sa"},
    "status": {"podIP": "127.0.0.1", "hostIP": "127.0.0.1"},
}


def test_expand_like_kubernetes():
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("cost $5 $(A", env) == "cost $5 $(A"


def test_field_refs():
    assert field_value(POD, "metadata.labels['app']") == "x"
    assert field_value(POD, "metadata.annotations['batch.kubernetes.io/job-completion-index']") == "3"
    assert field_value(POD, "spec.nodeName") == "n1"
    assert field_value(POD, "spec.serviceAccountName") == "sa"
    assert field_value(POD, "metadata.labels", volume=True) == 'app="x"'
    with pytest.raises(ConfigError):
        field_value(POD, "spec.bogus")


def test_resource_field_ref_defaults_limits_to_node_allocatable():
    c = {"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}}
    alloc = {"cpu": "8", "memory": "32Gi"}
    assert resource_value(POD, c, "requests.cpu", "1m", alloc) == "250"
    assert resource_value(POD, c, "requests.cpu", None, alloc) == "1"  # ceil
    assert resource_value(POD, c, "limits.cpu", None, alloc) == "8"
    assert resource_value(POD, c, "requests.memory", "1Mi", alloc) == "1024"


def test_env_order_refs_and_expansion():
    cms = {("configmaps", "cm"): {"data": {"k": "v", "other": "o"}},
           ("secrets", "s"): {"data": {"pw": base64.b64encode(b"hunter2").decode()}}}
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING", "value": "hi $(NAME) $(CM_k)"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}}},
        ],
    }
    env = container_env(POD, container, lambda kind, name: cms.get((kind, name)), {})
    assert env["GREETING"] == "hi p v"
    assert env["CM_other"] == "o"
    assert env["PW"] == "hunter2"
    assert "OPT" not in env
    with pytest.raises(ConfigError, match='configmap "nope" not found'):
        container_env(POD, {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x"}}}]},
                      lambda kind, name: None, {})


def test_mount_rewrite_is_prefix_and_component_aware():
    mm = MountMap({"/results": "/tmp/v/results", "/results/deep": "/tmp/v/deep", "/dev/termination-log": "/tmp/t"})
    assert mm.rewrite("--out=/results/r.json") == "--out=/tmp/v/results/r.json"
    assert mm.rewrite("/results/deep/x") == "/tmp/v/deep/x"
    assert mm.rewrite("/results") == "/tmp/v/results"
    assert mm.rewrite("/resultsX/y") == "/resultsX/y"
    assert mm.rewrite("/a/results/y") == "/a/results/y"
    assert mm.rewrite("echo hi > /dev/termination-log") == "echo hi > /tmp/t"


def test_argv_needs_command_or_known_image():
    assert argv_for({"command": ["echo"], "args": ["$(X)"]}, {"X": "1"}, {}) == ["echo", "1"]
    images = {"reg.io/workloads": ["python", "-m", "w"]}
    assert argv_for({"image": "reg.io/workloads:1.0", "args": ["run"]}, {}, images) == ["python", "-m", "w", "run"]
    with pytest.raises(ConfigError, match="sets no command"):
        argv_for({"name": "c", "image": "busybox"}, {}, {})


def test_extended_requests():
    c = {"resources": {"limits": {"example.com/accel": "2", "cpu": "1", "hugepages-2Mi": "0"}}}
    assert extended_requests(c) == {"example.com/accel": 2}
