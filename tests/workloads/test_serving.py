"""``serving`` (6.3.1.h): MLServer on loopback, three tasks, tritonclient over HTTP and gRPC; hooks fail each check."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from cardeval_workloads.harness import cli
from cardeval_workloads.suite import _serving_server, serving

pytestmark = pytest.mark.slow

SHORT = ("duration_s=1", "qps_levels=1,2")
CHECKS = set(serving.CHECKS)


def _checks(envelope) -> dict:
    return {c.name: c for c in envelope.checks}


@pytest.fixture(scope="module")
def served(run_quick):
    return run_quick("serving")


def test_three_tasks_are_served_right_over_both_protocols(served):
    checks = _checks(served)
    assert set(checks) == CHECKS
    assert all(c.ok is True for c in checks.values()), {n: c.detail for n, c in checks.items()}
    ready = checks["serving.models_ready"]
    assert ready.observed == 3 and "bound to HTTP 127.0.0.1:" in ready.detail and "gRPC 127.0.0.1:" in ready.detail
    scores = [m for m in served.metrics if m.name == "serving.model_score"]
    assert {(m.labels["model"], m.labels["protocol"]) for m in scores} == {
        (model, protocol) for model in ("digits-classifier", "recommender", "next-token")
        for protocol in ("http", "grpc")}
    assert {m.labels["task"] for m in scores} == {"image classification", "recommendation", "language modelling"}
    for m in scores:
        target = float(m.labels["target"].split()[-1])
        assert (m.value >= target) if m.labels["target"].startswith("≥") else (m.value <= target), m
        assert "device cpu" in m.labels["served_on"], m.labels
    digits = next(m for m in scores if m.labels["model"] == "digits-classifier")
    assert "provider CPUExecutionProvider" in digits.labels["served_on"]
    assert "listed by the index before loading" in checks["serving.load_unload"].detail
    assert "request refused" in checks["serving.load_unload"].detail


def test_concurrency_and_the_maximum_qps_are_measured(served):
    rates = {m.labels["protocol"]: m.value for m in served.metrics if m.name == "serving.request_rate"}
    assert set(rates) == {"http", "grpc"} and all(r > 0 for r in rates.values())
    latencies = {(m.labels["protocol"], m.labels["percentile"]): m.value for m in served.metrics
                 if m.name == "serving.latency_ms"}
    for protocol in ("http", "grpc"):
        assert 0 < latencies[(protocol, "p50")] <= latencies[(protocol, "p90")] <= latencies[(protocol, "p99")]
    levels = [m for m in served.metrics if m.name == "serving.qps"]
    assert [m.labels["concurrency"] for m in levels] == ["1", "2", "4", "8"]
    (best,) = [m for m in served.metrics if m.name == "serving.max_qps"]
    assert best.labels["bound_ms"] == "100"
    within = [m.value for m in levels if float(m.labels["mean_ms"]) <= 100 and m.labels["correct"] == "true"]
    assert best.value == max(within)


def test_wrong_answers_fail_every_answer_check_through_the_server(run_quick):
    checks = _checks(run_quick("serving", "wrong_answers=true", *SHORT))
    assert checks["serving.models_ready"].ok is True
    for name in ("serving.infer_correct", "serving.load_unload", "serving.concurrent_correct"):
        assert checks[name].ok is False, (name, checks[name].detail)
    assert "TOO FAR" in checks["serving.infer_correct"].detail
    assert checks["serving.concurrent_correct"].observed > 0


def test_a_model_that_fails_to_load_is_reported_alone(run_quick):
    checks = _checks(run_quick("serving", "bad_model=true", *SHORT))
    ready = checks["serving.models_ready"]
    assert ready.ok is False and ready.detail.split(": ", 1)[1].startswith("broken-classifier: failed to load")
    assert "INVALID_PROTOBUF" in ready.detail
    for name in ("serving.infer_correct", "serving.load_unload", "serving.concurrent_correct"):
        assert checks[name].ok is True, (name, checks[name].detail)


def test_a_server_that_does_not_come_up_is_the_runs_error_with_its_log():
    envelope, code = cli.run(["serving", "--profile", "quick", "--device", "cpu", "--param", "threads=1",
                              "--param", "start_timeout_s=0.05"])
    assert code != 0 and envelope.status == "error"
    assert "MLServer was not ready within 0.05 s on 127.0.0.1; its log ends:" in envelope.errors[0]
    assert not envelope.checks


def _listeners(pid: int) -> list[str]:
    """The addresses ``pid`` listens on, IPv4-mapped IPv6 ones (gRPC's) written as IPv4."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].replace("[::ffff:", "").replace("]", "") for line in out.splitlines()
            if f"pid={pid}," in line]


def test_the_server_binds_the_pod_address_and_nothing_else(tmp_path, monkeypatch):
    """With the pod's IP set (here 127.0.0.2, a loopback address) the server listens there only."""
    monkeypatch.setenv(_serving_server.POD_IP_ENV, "127.0.0.2")
    repository = tmp_path / "models"
    repository.mkdir()
    server = _serving_server.start(repository, tmp_path, timeout_s=60)
    try:
        assert server.bound == {"HTTP": f"127.0.0.2:{server.http_port}", "gRPC": f"127.0.0.2:{server.grpc_port}"}
        listening = _listeners(server.process.pid)
        assert sorted(listening) == sorted([f"127.0.0.2:{server.http_port}", f"127.0.0.2:{server.grpc_port}"])
        settings = json.loads((repository / "settings.json").read_text())
        assert settings["host"] == "127.0.0.2" and settings["metrics_endpoint"] is None
        with socket.socket() as s:  # not on the host's other addresses
            assert s.connect_ex(("127.0.0.1", server.http_port)) != 0
    finally:
        server.stop()
    assert not server.alive()
