"""The communication workloads run for real on the CPU: several processes over gloo.

``collectives`` as the engine runs it (a subprocess that starts its own ranks),
and under ``mpirun`` (OpenMPI from Debian: ``apt-get install -y openmpi-bin``),
which exercises the MPI bootstrap of ``harness/distributed.py``. A rank that
corrupts its buffer (the documented ``corrupt_rank`` test hook) must turn the
check, and the clause, into a failure. ``train-parallel`` trains data-parallel
to its target and reports card linearity; ``p2p`` and ``internode`` say why
they cannot measure on one CPU node.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID, COLLECTIVE_OPS
from cardeval.engine.facts import NodeFacts, WorkloadRun
from cardeval.engine.judge import judge_clause
from cardeval.engine.rules import JudgeContext
from cardeval_workloads.envelope import (
    ENVELOPE_MARKER, TERMINATION_MESSAGE_LIMIT, Envelope, find_envelope_in_output, parse_envelope,
)

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "workloads"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_cli(*args: str, tmp_path: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess, Envelope, str]:
    env = _env()
    term = tmp_path / "termination-log"
    env["TERMINATION_MESSAGE_PATH"] = str(term)
    proc = subprocess.run([sys.executable, "-m", "cardeval_workloads", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ENVELOPE_MARKER), (proc.stdout[:300], proc.stderr[-2000:])
    return proc, find_envelope_in_output(proc.stdout), term.read_text() if term.exists() else ""


def judge(clause_id: str, workload: str, env: Envelope, cards: int = 0, nodes: int = 1):
    clause = BY_ID[clause_id]
    ctx = JudgeContext(clause=clause, node=NodeFacts("n1"), runs={workload: WorkloadRun(workload, envelope=env)},
                       thresholds=dict(clause.thresholds), mode="local", cards_per_node=cards,
                       nodes_in_evaluation=nodes)
    return judge_clause(clause, ctx, None, {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_collectives_on_the_cpu_with_gloo(tmp_path):
    proc, env, message = run_cli("collectives", "--profile", "quick", tmp_path=tmp_path)
    assert proc.returncode == 0 and env.status == "ok", env.errors
    world = env.metric("collective.world_size")
    assert world.value == 2 and world.labels["backend"] == "gloo" and world.labels["launch"] == "spawn"
    assert "busbw=algbw*factor" in world.labels["convention"]
    for op in COLLECTIVE_OPS:
        check = env.checks_named(f"collective.{op}.correct")[0]
        assert check.ok is True, check.detail
        headline = [m for m in env.metrics_named(f"collective.{op}.busbw_gbps") if "detail" not in m.labels]
        assert len(headline) == 1 and headline[0].value > 0 and headline[0].unit == "GB/s"
        alg = [m for m in env.metrics_named(f"collective.{op}.algbw_gbps") if "detail" not in m.labels][0]
        assert alg.labels["largest_size_bytes"] == headline[0].labels["largest_size_bytes"]
        factor = {"all_reduce": 1.0, "broadcast": 1.0, "reduce": 1.0, "send_recv": 1.0}.get(op, 0.5)  # n = 2
        assert headline[0].value == pytest.approx(alg.value * factor, rel=1e-5)
        assert env.metric(f"collective.{op}.time_us", detail="true") is not None
    # seed 003's rows are there, unscored on 2 CPU ranks, with the reason
    rows = env.metrics_named("collective.a100_ratio")
    assert len(rows) == 10 and all(r.value is None and r.unavailable for r in rows)
    assert env.metric("collective.a100_weighted_score").unavailable
    # the termination message fits and agrees
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    compact = parse_envelope(message)
    assert {c.name: c.ok for c in compact.checks} == {c.name: c.ok for c in env.checks}
    from cardeval.engine.collect import collect

    run = collect("collectives", proc.returncode, proc.stdout, message)  # as both executors cross-check them
    assert run.usable, run.failure()
    # judged: the CPU run is the stand-in for the cards, and says so
    result = judge("6.2.1.h", "collectives", env)
    assert result.verdict == Verdict.PASS, result.reason
    assert "host CPU stand-in" in result.reason
    # a node with one card: no card-to-card collective was possible
    assert judge("6.2.1.h", "collectives", env, cards=1).verdict == Verdict.NOT_RUN


def test_a_rank_that_corrupts_its_buffer_is_caught(tmp_path):
    proc, env, _ = run_cli("collectives", "--profile", "quick",
                           "--param", "corrupt_rank=1", "--param", "corrupt_ops=all_reduce,gather",
                           "--param", "sizes_kib=64", tmp_path=tmp_path)
    assert proc.returncode == 0 and env.status == "ok", env.errors  # a wrong result is a finding, not a crash
    checks = {c.name: c for c in env.checks}
    bad = checks["collective.all_reduce.correct"]
    assert bad.ok is False and "rank 1" in bad.detail and "corrupt_rank=1" in bad.detail
    # rank 1 only sends in a gather: its corrupted contribution is seen by the root
    assert checks["collective.gather.correct"].ok is False and "rank 0" in checks["collective.gather.correct"].detail
    assert all(checks[f"collective.{op}.correct"].ok is True for op in COLLECTIVE_OPS
               if op not in ("all_reduce", "gather"))
    result = judge("6.2.1.h", "collectives", env)
    assert result.verdict == Verdict.FAIL and "all_reduce" in result.reason
    assert judge("6.3.1.g", "collectives", env).verdict == Verdict.FAIL


def test_collectives_under_mpirun(tmp_path):
    mpirun = shutil.which("mpirun")
    assert mpirun, ("mpirun not found: install OpenMPI (Debian: apt-get install -y openmpi-bin); "
                    "test.sh installs it when it is missing")
    port = free_port()
    cmd = [mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none",
           "-x", "PYTHONPATH", "-x", "MASTER_ADDR=127.0.0.1", "-x", f"MASTER_PORT={port}"]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    cmd += [sys.executable, "-m", "cardeval_workloads", "collectives", "--profile", "quick",
            "--param", "ops=all_reduce,all_to_all,send_recv", "--param", "sizes_kib=64"]
    # mpirun only starts the ranks (torch.distributed does the communication): no MPI transport to tune
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 1 shares mpirun's stdout and prints nothing: exactly one envelope, rank 0's
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ENVELOPE_MARKER), proc.stdout[:500]
    envelope = find_envelope_in_output(proc.stdout)
    world = envelope.metric("collective.world_size")
    assert world.value == 2 and world.labels["launch"] == "launched"
    assert "rank 1" in proc.stderr and "OMPI_COMM_WORLD" in proc.stderr
    for op in ("all_reduce", "all_to_all", "send_recv"):
        assert envelope.checks_named(f"collective.{op}.correct")[0].ok is True


def test_train_parallel_data_parallel_and_card_linearity(tmp_path):
    proc, env, message = run_cli("train-parallel", "--profile", "quick", tmp_path=tmp_path)
    assert proc.returncode == 0 and env.status == "ok", env.errors
    checks = {c.name: c for c in env.checks}
    assert checks["train_parallel.completed"].ok is True, checks["train_parallel.completed"].detail
    assert "gradient all-reduce" in checks["train_parallel.completed"].detail
    reached = checks["train_parallel.reached_target"]
    assert reached.ok is True and reached.expected == 0.97, reached.detail
    assert "scikit-learn digits" in reached.detail and "1347 train / 450 validation" in reached.detail
    lin = env.metric("linearity.card")
    assert lin.value is not None and 0 < lin.value < 2 and lin.labels["formula"] == "V1/(N*V2)"
    one = env.metric("train_parallel.samples_per_s", scope="one_card").value
    node = env.metric("train_parallel.samples_per_s", scope="node").value
    assert lin.value == pytest.approx(node / (2 * one))
    assert env.metric("linearity.cluster") is None  # one node
    parse_envelope(message)
    # on the CPU the card clauses stay NotRun (no cards), the metric is shown in the envelope
    assert judge("6.2.5.6", "train-parallel", env).verdict == Verdict.NOT_RUN
    assert judge("6.2.5.6", "train-parallel", env, cards=2).verdict == Verdict.PASS


def test_p2p_and_internode_explain_what_one_cpu_node_cannot_do(tmp_path):
    _, p2p, _ = run_cli("p2p", "--profile", "quick", tmp_path=tmp_path)
    check = p2p.checks_named("p2p.correct")[0]
    assert check.ok is None and "no accelerator" in check.detail
    assert p2p.metric("p2p.aggregate_bidir_gbps").unavailable
    assert judge("6.2.1.f", "p2p", p2p).verdict == Verdict.NOT_RUN
    _, inter, _ = run_cli("internode", "--profile", "quick", tmp_path=tmp_path)
    assert inter.checks_named("internode.correct")[0].ok is None
    assert inter.metric("internode.hosts").value == 1 and inter.metric("internode.hosts").unit == "hosts"
    assert judge("6.2.1.g", "internode", inter, cards=1, nodes=1).verdict == Verdict.NOT_RUN


def two_indexed_pods(workload: str) -> list[str]:
    """``workload`` as the two pods of an Indexed Job (JOB_COMPLETION_INDEX 0 and 1) on loopback: each pod's stdout
    (pod 0 reports for the run)."""
    port = free_port()
    procs = []
    for index in (0, 1):
        env = _env()
        env.update(JOB_COMPLETION_INDEX=str(index), CARDEVAL_NNODES="2", CARDEVAL_PROCS_PER_NODE="1",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cardeval_workloads", workload, "--profile", "quick"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    return [out for out, _ in outs]


def test_internode_across_two_indexed_nodes_on_one_host_counts_one_host(tmp_path):
    """Two 'nodes' (pods 0 and 1 of an Indexed Job) on loopback: the exchange and its checks run, and
    ``internode.hosts`` says they shared one host, so the run proves nothing about a server network."""
    env = find_envelope_in_output(two_indexed_pods("internode")[0])
    assert env.checks_named("internode.correct")[0].ok is True
    hosts = env.metric("internode.hosts")
    assert (hosts.value, hosts.unit, hosts.labels["ranks"]) == (1.0, "hosts", "2 of 2")
    assert hosts.labels["identity"] in ("kernel boot_id", "hostname")
    transport = env.checks_named("internode.transport")[0]
    assert transport.ok is False and "gloo" in transport.detail
    gbps = env.metric("internode.gbps", per="card pair")
    assert gbps.unit == "Gbit/s" and gbps.value > 0


def test_train_parallel_across_two_indexed_nodes_reports_cluster_linearity(tmp_path):
    """Two coordinators as two pods of an Indexed Job (JOB_COMPLETION_INDEX 0 and 1) on loopback."""
    outs = two_indexed_pods("train-parallel")
    env = find_envelope_in_output(outs[0])
    checks = {c.name: c.ok for c in env.checks}
    assert checks == {"train_parallel.completed": True, "train_parallel.reached_target": True}, env.checks
    cluster = env.metric("linearity.cluster")
    assert cluster.value is not None and cluster.labels == {"cards": "2", "nodes": "2", "formula": "V3/(N*V4)"}
    assert env.metric("train_parallel.samples_per_s", scope="cluster").value > 0
    # one card per node: no card linearity (it compares N >= 2 cards of one node), said so
    assert "1 card per node" in env.metric("linearity.card").unavailable
    follower = find_envelope_in_output(outs[1])
    assert follower.checks == [] and follower.status == "ok"


def test_ranks_started_with_spawn_as_for_cards(tmp_path):
    """Cards need freshly started rank processes (no device runtime survives a fork): the same path on
    the CPU, so the rank function and its arguments must reach a new interpreter."""
    env = _env()
    env.update(CARDEVAL_START_METHOD="spawn", TERMINATION_MESSAGE_PATH=str(tmp_path / "t"))
    proc = subprocess.run([sys.executable, "-m", "cardeval_workloads", "collectives", "--profile", "quick",
                           "--param", "ops=all_reduce,scatter", "--param", "sizes_kib=64"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    envelope = find_envelope_in_output(proc.stdout)
    assert proc.returncode == 0 and envelope.status == "ok", (envelope.errors, proc.stderr[-2000:])
    assert [c.ok for c in envelope.checks] == [True, True]
