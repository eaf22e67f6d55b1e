"""The MPIJob's launcher command, run the way the MPI Operator runs it.

No MPI Operator runs on the test control plane, so its MPIJobs never start
there (``test_operator_multinode_e2e``). What the launcher pod would run is
checked here instead, for real: the exact ``mpirun`` command line of the
operator's MPIJob, over a hostfile of two workers with one slot each — the
MPI Operator's hostfile, ``slotsPerWorker`` = cards per node. OpenMPI reaches
a worker with its rsh agent (the MPI Operator's workers run sshd); here the
agent starts the "remote" daemon on this machine instead, so OpenMPI places
one rank on each of two nodes and the ranks bootstrap torch.distributed from
its ``OMPI_COMM_WORLD_*`` variables and the ``-x MASTER_ADDR/MASTER_PORT`` the
operator forwards. The envelope in the launcher's output then judges the
clause, as the operator's collection does.

Only what differs from a cluster is added to the command: ``--hostfile`` and
the rsh agent (the MPI Operator configures both through its ConfigMap), loopback
interfaces, no shared topology between the two daemons on one machine, root
permission where the tests run as root, and a free port instead of the fixed
rendezvous port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from cardeval.api.models import Verdict
from cardeval.engine.catalog import BY_ID
from cardeval.engine.collect import collect
from cardeval.engine.facts import NodeFacts
from cardeval.engine.judge import judge_clause
from cardeval.engine.planner import MultiNodeItem
from cardeval.engine.rules import JudgeContext
from cardeval.operator.multinode_launch import RENDEZVOUS_PORT, mpijob_manifest
from cardeval.operator.config import Settings
from test_multinode_units import UID, evaluation, items

ROOT = Path(__file__).resolve().parents[2]


#: An rsh agent that "reaches" any host by running the command here (OpenMPI passes its own
#: options first, then the host, then the command that starts its daemon).
RSH_AGENT = """#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
shift
exec /bin/sh -c "$*"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(key: str, clause: str, tmp_path: Path) -> tuple[MultiNodeItem, list[str]]:
    """The launcher container's command of the operator's MPIJob for run ``key``, made runnable here."""
    # no card here: the host CPU stands in, as the spec must say explicitly
    ev = evaluation(multi_node={"nodes": 2, "launcher": "mpijob"}, cards=1, clauses={"include": [clause]},
                    cpuStandIn=True)
    item = next(i for i in items(ev, nodes=("worker-a", "worker-b")).items if i.key == key)
    settings = Settings(namespace="ns", workload_python=(sys.executable,), multinode_master_addr="127.0.0.1",
                        workload_env={"PYTHONPATH": str(ROOT / "workloads"), "GLOO_SOCKET_IFNAME": "lo"})
    manifest = mpijob_manifest(item, ev, UID, settings)
    cmd = list(manifest["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["command"])
    assert cmd[:3] == ["mpirun", "-np", "2"] and manifest["spec"]["slotsPerWorker"] == 1

    port = cmd.index(f"MASTER_PORT={RENDEZVOUS_PORT}")
    cmd[port] = f"MASTER_PORT={free_port()}"
    agent = tmp_path / "rsh-agent"
    agent.write_text(RSH_AGENT)
    agent.chmod(0o755)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("".join(f"{node} slots={item.cards_per_node}\n" for node in item.nodes))
    # Two OpenMPI daemons on one machine would both share the hardware topology at the same address
    # (hwloc's shared-memory copy) and one of them crashes now and then: each reads its own instead.
    here = ["--hostfile", str(hostfile), "--mca", "plm_rsh_agent", str(agent),
            "--mca", "oob_tcp_if_include", "lo", "--mca", "rtc_hwloc_vmhole", "none"]
    if os.geteuid() == 0:
        here.insert(0, "--allow-run-as-root")
    return item, [shutil.which("mpirun") or "mpirun", *here, *cmd[1:]]


def launch(key: str, clause: str, tmp_path: Path):
    """Run the launcher's command; the run as the operator collects it from the launcher's log."""
    assert shutil.which("mpirun"), "mpirun not found: test.sh installs OpenMPI (Debian: openmpi-bin)"
    item, cmd = launcher_command(key, clause, tmp_path)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "workloads")})
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    # mpirun writes no termination message and forwards rank 0's envelope only (the others print none)
    run = replace(collect(item.workload, proc.returncode, proc.stdout, ""), workload=key)
    assert run.usable, (run.failure(), proc.stderr[-4000:])
    assert "OMPI_COMM_WORLD" in proc.stderr  # the layout's source, as the ranks log it
    return item, run


def test_internode_under_the_mpijob_launcher_judges_6_2_1_g(tmp_path):
    item, run = launch("internode", "6.2.1.g", tmp_path)
    env = run.envelope
    world = env.metric("internode.collective.world_size")
    assert world.value == 2 and world.labels["launch"] == "launched" and world.labels["nodes"] == "2", world
    assert env.checks_named("internode.correct")[0].ok is True
    clause = BY_ID["6.2.1.g"]
    ctx = JudgeContext(clause=clause, node=NodeFacts(item.nodes[0], source="cluster"), runs={"internode": run},
                       thresholds={}, mode="cluster", cards_per_node=0, nodes_in_evaluation=2)
    result = judge_clause(clause, ctx, None, {})
    # gloo over TCP on the host CPU says nothing about high-performance communication between servers
    assert result.verdict == Verdict.NOT_RUN and "host CPU stand-in" in result.reason, result.reason
    assert env.metric("internode.gbps").value > 0


def test_cluster_linearity_under_the_mpijob_launcher(tmp_path):
    _, run = launch("train-parallel.cluster", "6.2.5.6", tmp_path)
    env = run.envelope
    assert env.checks_named("train_parallel.completed")[0].ok is True
    cluster = env.metric("linearity.cluster")
    assert cluster.value is not None and cluster.value > 0, cluster
    assert cluster.labels["nodes"] == "2" and cluster.labels["formula"] == "V3/(N*V4)"
    # one card per node: card linearity says why it is not there, never a made-up figure
    assert env.metric("linearity.card").value is None
