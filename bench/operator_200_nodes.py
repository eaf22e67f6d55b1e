"""Benchmark (not a test): the operator over many simulated nodes on the real test control plane.

    PYTHONPATH=operator:workloads:testbed python bench/operator_200_nodes.py [--nodes 200]

Starts the control plane, installs the CRD and the chart's RBAC, runs the operator as the chart's
ServiceAccount (exactly as the end-to-end tests do), registers NODES fake nodes (one node agent) with
two cards each, applies one evaluation over all of them (clauses 6.1.a and 6.2.1.a: two work items
per node, a stand-in workload that answers at once), and measures

* seconds from apply to all first-wave Jobs created (first wave = min(nodes, maxNodesInParallel)),
* seconds from apply to Complete,
* status patches written, per second over the run, and the mean latency of one patch (its inverse is
  the patch rate one worker could sustain),
* the operator's resident memory (current and peak), API calls, reconcile passes and their mean duration,
* the size of the evaluation object with its status.

Prints one JSON document (and a human summary on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "workloads"), str(ROOT / "testbed"),
                str(ROOT / "tests" / "operator")]

import yaml  # noqa: E402

from cardeval_testbed import ControlPlane  # noqa: E402
from operator_harness import NAMESPACE, OperatorProcess, install  # noqa: E402


def rss(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head = line.split(" ")[0]
            if head == name or head.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--max-parallel", type=int, default=200, help="spec.maxNodesInParallel")
    ap.add_argument("--resync", type=float, default=2.0, help="CARDEVAL_RESYNC_SECONDS")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()

    work = Path(__import__("tempfile").mkdtemp(prefix="cardeval-bench-"))
    cp = ControlPlane().start()
    op = None
    try:
        inst = install(cp, work)
        log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
        log(f"control plane up; registering {args.nodes} nodes")
        t = time.monotonic()
        nodes = [{"name": f"bench-{i:04d}", "capacity": {"example.com/accel": "2"},
                  "labels": {"cardeval.io/pool": "bench"}} for i in range(args.nodes)]
        cp.node_agent(nodes, timeout=300, node_credentials=False)
        log(f"{args.nodes} nodes Ready in {time.monotonic() - t:.1f}s")
        op = OperatorProcess(inst, work, CARDEVAL_RESYNC_SECONDS=str(args.resync),
                             CARDEVAL_WORKLOAD_PYTHON=f"{sys.executable} {ROOT / 'bench' / 'fake_workload.py'}")
        op.start()
        doc = {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": "bench"},
               "spec": {"cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 2,
                        "nodeSelector": {"cardeval.io/pool": "bench"}, "profile": "quick",
                        "clauses": {"include": ["6.1.a", "6.2.1.a"]}, "maxNodesInParallel": args.max_parallel}}
        first_wave = min(args.nodes, args.max_parallel)
        jobs_path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs?labelSelector=cardeval.io/evaluation=bench"
        before = op.metrics()
        t0 = time.monotonic()
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        t_wave = t_done = None
        peak_rss = 0
        while time.monotonic() - t0 < args.timeout:
            peak_rss = max(peak_rss, rss(op.proc.pid)["VmRSS"])
            if t_wave is None:
                # the operator's own count of Jobs the API server answered 201 Created for (a local
                # HTTP read: listing 200 Jobs through the loaded API server would blur the number)
                n = metric(op.metrics(), "cardeval_jobs_created_total")
                if n >= first_wave:
                    t_wave = time.monotonic() - t0
                    listed = len(cp.api("GET", jobs_path)["items"])
                    log(f"first wave: {int(n)} Jobs created {t_wave:.2f}s after apply ({listed} listed)")
            if t_wave is None:
                time.sleep(0.1)
                continue
            status = (cp.api("GET", "/apis/cardeval.io/v1alpha1/cardevaluations/bench") or {}).get("status") or {}
            if status.get("phase") == "Complete":
                t_done = time.monotonic() - t0
                break
            time.sleep(1.0)
        after = op.metrics()
        obj = cp.api("GET", "/apis/cardeval.io/v1alpha1/cardevaluations/bench")
        status = obj.get("status") or {}
        mem = rss(op.proc.pid)
        elapsed = (t_done or (time.monotonic() - t0))
        patches = metric(after, "cardeval_status_patches_total") - metric(before, "cardeval_status_patches_total")
        passes = metric(after, "cardeval_reconcile_duration_seconds_count")
        result = {
            "nodes": args.nodes, "maxNodesInParallel": args.max_parallel, "resyncSeconds": args.resync,
            "workItems": 2 * args.nodes,
            "secondsApplyToFirstWaveJobsCreated": round(t_wave, 2) if t_wave else None,
            "secondsApplyToComplete": round(t_done, 2) if t_done else None,
            "phase": status.get("phase"), "nodesDone": status.get("nodesDone"),
            "statusPatches": int(patches), "statusPatchesPerSecond": round(patches / elapsed, 2),
            "statusPatchMeanSeconds": round(metric(after, "cardeval_status_patch_duration_seconds_sum")
                                            / max(1.0, metric(after,
                                                              "cardeval_status_patch_duration_seconds_count")), 4),
            "reconcilePasses": int(passes),
            "reconcileMeanSeconds": round(metric(after, "cardeval_reconcile_duration_seconds_sum") / passes, 3)
            if passes else None,
            "jobsCreated": int(metric(after, "cardeval_jobs_created_total")),
            "apiCalls": {v: int(metric(after, f'cardeval_api_calls{{verb="{v}"}}'))
                         for v in ("GET", "POST", "PUT", "PATCH", "DELETE")},
            "operatorRssMiB": round(mem["VmRSS"] / 2**20, 1), "operatorPeakRssMiB": round(mem["VmHWM"] / 2**20, 1),
            "evaluationObjectBytes": len(json.dumps(obj)),
            "controlPlaneRssMiB": {k: round(v / 2**20) for k, v in cp.rss_bytes().items()},
        }
        print(json.dumps(result, indent=2))
        return 0 if t_done else 1
    finally:
        if op is not None:
            op.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
