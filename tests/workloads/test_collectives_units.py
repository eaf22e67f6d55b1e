"""Pieces of the multi-process harness and the communication workloads, without processes.

Layout detection from each launcher's variables, who prints the envelope, the
nccl-tests factors, seed 003's table (the DeepSpeed throughput formula must
give back the table's own A100 figures), the patterns' expected results, and
``p2p``'s card-to-card logic on two stand-in "cards" that live on the CPU.
"""

from __future__ import annotations


import pytest

from cardeval_workloads.harness import distributed
from cardeval_workloads.harness.errors import UsageError


# --- layout ------------------------------------------------------------------------------

def test_spawn_layout_without_launcher_variables():
    lay = distributed.detect({}, local_default=4)
    assert (lay.mode, lay.world_size, lay.nnodes, lay.procs_per_node, lay.coordinator) == ("spawn", 4, 1, 4, True)
    assert lay.master_addr == "127.0.0.1" and lay.master_port == 0


def test_openmpi_layout():
    env = {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "MASTER_ADDR": "job-worker-0.job.ns.svc", "MASTER_PORT": "29500"}
    lay = distributed.detect(env, local_default=1)
    assert (lay.mode, lay.rank, lay.local_rank, lay.world_size, lay.nnodes, lay.node_rank) == \
        ("launched", 5, 1, 8, 2, 1)
    assert lay.master_addr == "job-worker-0.job.ns.svc" and lay.master_port == 29500
    assert not distributed.reports_envelope(env)
    assert distributed.reports_envelope({**env, "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "0"})


def test_openmpi_across_nodes_needs_master_addr():
    env = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    with pytest.raises(UsageError, match="MASTER_ADDR"):
        distributed.detect(env, local_default=1)
    one_node = {**env, "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    assert distributed.detect(one_node, local_default=1).master_addr == "127.0.0.1"


@pytest.mark.parametrize("env, expect", [
    ({"PMIX_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "3"}, (3, 4, 3)),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}, (1, 2, 1)),
    ({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "h"}, (2, 4, 0)),
])
def test_other_launchers(env, expect):
    lay = distributed.detect(env, local_default=1)
    assert (lay.rank, lay.world_size, lay.local_rank) == expect and lay.mode == "launched"


def test_pmix_without_size_is_an_invocation_error():
    with pytest.raises(UsageError, match="world size"):
        distributed.detect({"PMIX_RANK": "0"}, local_default=1)
    assert distributed.reports_envelope({"PMIX_RANK": "1"})  # the invalid invocation is reported, not swallowed


def test_indexed_job_layout():
    env = {"JOB_COMPLETION_INDEX": "1", "CARDEVAL_NNODES": "3", "CARDEVAL_PROCS_PER_NODE": "8",
           "MASTER_ADDR": "ev-internode-0.ev-internode.ns.svc"}
    lay = distributed.detect(env, local_default=1)
    assert (lay.mode, lay.node_rank, lay.nnodes, lay.world_size, lay.procs_per_node, lay.coordinator) == \
        ("indexed", 1, 3, 24, 8, True)
    assert lay.master_port == distributed.DEFAULT_PORT
    assert distributed.reports_envelope(env)  # every pod has its own log
    with pytest.raises(UsageError, match="MASTER_ADDR"):
        distributed.detect({k: v for k, v in env.items() if k != "MASTER_ADDR"}, local_default=1)
    with pytest.raises(UsageError, match="outside"):
        distributed.detect({**env, "JOB_COMPLETION_INDEX": "3"}, local_default=1)


def test_backend_per_device():
    assert distributed.default_backend("cuda") == "nccl" and distributed.default_backend("rocm") == "nccl"
    assert distributed.default_backend("npu") == "hccl" and distributed.default_backend("cpu") == "gloo"


# --- factors, patterns, seed 003 -----------------------------------------------------------

def test_nccl_tests_factors():
    from cardeval_workloads.suite import _comm

    n = 8
    assert _comm.factor("all_reduce", n) == pytest.approx(2 * 7 / 8)
    for op in ("all_gather", "reduce_scatter", "all_to_all", "gather", "scatter"):
        assert _comm.factor(op, n) == pytest.approx(7 / 8)
    for op in ("broadcast", "reduce", "send_recv"):
        assert _comm.factor(op, n) == 1.0
    alg, bus = _comm.bandwidths("all_reduce", 4_000_000_000, 2.0, 8)
    assert alg == pytest.approx(2.0) and bus == pytest.approx(3.5)


def test_table_formula_reproduces_the_a100_throughputs():
    """DeepSpeed's comm-bench formula on the table's A100 durations gives the table's A100 Gbps."""
    from cardeval_workloads.suite import _comm_table

    assert len(_comm_table.A100_TABLE) == 10
    assert sum(r.weight for r in _comm_table.A100_TABLE) == pytest.approx(100.4)  # as printed (6.3 × 8 + 50)
    for row in _comm_table.A100_TABLE:
        assert row.deepspeed_gbps(row.a100_ms / 1e3) == pytest.approx(row.a100_gbps, rel=2e-3), row


def test_table_report_scores_only_matching_rows():
    from cardeval_workloads.harness.builder import EnvelopeBuilder
    from cardeval_workloads.suite import _comm_table

    out = EnvelopeBuilder("collectives")
    row = _comm_table.A100_TABLE[0]  # all_reduce, 8 cards
    _comm_table.report_table(out, 8, {(row.op, row.our_nbytes()): row.a100_ms / 1e3 / 2}, "n/a")
    env = out.build()
    ratio = env.metric("collective.a100_ratio", op="all_reduce", cards="8")
    assert ratio.value == pytest.approx(2.0)
    assert env.metric("collective.a100_ratio", op="all_reduce", cards="32").value is None
    score = env.metric("collective.a100_weighted_score")
    assert score.value == pytest.approx(2.0) and score.labels["rows"] == "all_reduce@8"


class _R:
    """Just enough of a rank for building cases without a process group."""

    def __init__(self, rank: int, n: int) -> None:
        import torch

        self.rank, self.world_size, self.device = rank, n, torch.device("cpu")


@pytest.mark.parametrize("op", ["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "scatter",
                                "gather", "broadcast", "send_recv"])
def test_expected_results_follow_from_the_patterns(op):
    """Simulate each operation by hand from every rank's input: it must equal the expected result."""
    import torch

    from cardeval_workloads.suite import _comm

    n, nbytes = 3, 4 * 3 * 5
    cases = [_comm.make_case(op, nbytes, _R(r, n)) for r in range(n)]
    for c in cases:
        c.fill()
    srcs = [c.source.clone() for c in cases]
    for r, c in enumerate(cases):
        got = c.result()
        if got is None:
            continue
        _, want = got
        if op == "all_reduce":
            sim = sum(srcs)
        elif op in ("all_gather", "gather"):
            sim = torch.cat(srcs)
        elif op == "reduce_scatter":
            sim = sum(srcs).chunk(n)[r]
        elif op == "all_to_all":
            sim = torch.cat([s.chunk(n)[r] for s in srcs])
        elif op == "scatter":
            sim = srcs[0].chunk(n)[r]
        elif op == "broadcast":
            sim = srcs[0]
        else:
            sim = srcs[(r - 1) % n]
        assert torch.equal(sim, want), (op, r)


# --- p2p's card-to-card logic on stand-in cards -----------------------------------------------

class _TwoCpuCards:
    """Two 'cards' that are the host CPU: exercises p2p's pairs, streams and checks."""

    backend, device_type, is_accelerator = "cpu", "cpu", True

    def device(self, index):
        import torch

        return torch.device("cpu")

    def synchronize(self, index):
        pass

    def describe(self, index):
        return f"stand-in:{index}"


def _p2p_ctx(params):
    import logging

    from cardeval_workloads.harness.builder import EnvelopeBuilder
    from cardeval_workloads.harness.context import RunContext

    return RunContext(workload="p2p", profile="quick", params=params, accel=_TwoCpuCards(), devices=[0, 1],
                      out=EnvelopeBuilder("p2p"), sizes=dict(size_mib=1, repeats=2, inner=1),
                      log=logging.getLogger("test"))


@pytest.mark.parametrize("inject", [False, True])
def test_p2p_pairs_and_aggregate(inject):
    from cardeval_workloads.suite import p2p

    ctx = _p2p_ctx({"inject_error": inject})
    p2p._Node(ctx).run()
    env = ctx.out.build()
    correct = env.checks_named("p2p.correct")[0]
    assert correct.ok is (not inject), correct.detail
    assert len([m for m in env.metrics_named("p2p.pair_gbps")]) == 2  # 0→1 and 1→0
    assert len(env.metrics_named("p2p.pair_bidir_gbps")) == 1
    agg = env.metric("p2p.aggregate_bidir_gbps")
    assert agg.device is None and agg.value > 0
    per_card = env.metrics_named("p2p.card_aggregate_bidir_gbps")
    assert agg.value == pytest.approx(min(m.value for m in per_card))
