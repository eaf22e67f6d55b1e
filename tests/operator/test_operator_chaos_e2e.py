"""The operator killed (SIGKILL) at random points of one evaluation, and restarted each time: nothing lost,
nothing doubled, nothing left behind, and the same verdicts as an uninterrupted run of the same evaluation.

The evaluation has each kind of work: card items (Jobs), the device-plugin check (the operator's own pods),
a run across nodes (an Indexed Job) and admission (the testing taint and the node's result on it). The kill
points are drawn over the uninterrupted run's duration, from a seed the test prints. ``CARDEVAL_CHAOS_KILLS``
sets how many (CI: 5; ``CARDEVAL_CHAOS_KILLS=20 pytest -k chaos`` runs the full count and prints the tally).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

from cardeval.operator.results import configmap_name

from operator_harness import NAMESPACE
from test_operator_e2e import ON_PASS, TAINT, delete_eval, events_of, get_eval, jobs_of, wait_complete

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("CARDEVAL_CHAOS_KILLS", "5"))
CLAUSES = ["6.1.n", "6.2.1.a", "6.2.2.a", "6.2.1.g"]


def pool_nodes(pool: str) -> list[dict]:
    return [{"name": f"{pool}-{i}", "labels": {"cardeval.io/pool": pool}, "capacity": {"example.com/accel": "1"},
             "taints": [TAINT]} for i in (1, 2)]


def chaos_doc(name: str, pool: str) -> dict:
    return {"apiVersion": "cardeval.io/v1alpha1", "kind": "CardEvaluation", "metadata": {"name": name},
            "spec": {"cardType": "training", "resourceName": "example.com/accel", "expectedCardsPerNode": 1,
                     "nodeSelector": {"cardeval.io/pool": pool}, "profile": "quick", "cpuStandIn": True,
                     "clauses": {"include": CLAUSES}, "multiNode": {"nodes": 2, "launcher": "indexed-job"},
                     "admission": {"onPass": ON_PASS}}}


def results(cluster, name: str, nodes: list[str]) -> list[dict[str, dict]]:
    """Each node's clause results (in node order), from its stored result."""
    out = []
    for node in nodes:
        cm = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{configmap_name(name, node)}")
        out.append({r["clause"]: r for r in json.loads(cm["data"]["node-result.json"])["results"]})
    return out


def verdicts(found: list[dict[str, dict]]) -> list[dict[str, str]]:
    return [{clause: r["verdict"] for clause, r in node.items()} for node in found]


class JobWatch(threading.Thread):
    """Every uid each Job name had while the evaluation ran: more than one is a Job made twice."""

    def __init__(self, cluster, name: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.name, self.seen, self.done = cluster, name, {}, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.3):
            try:
                for job in jobs_of(self.cluster, self.name):
                    self.seen.setdefault(job["metadata"]["name"], set()).add(job["metadata"]["uid"])
            except Exception:  # noqa: BLE001 - the API is busy; the next look sees it
                pass


def test_the_operator_killed_at_random_points_loses_nothing_and_ends_as_an_uninterrupted_run(
        cluster, installed, multinode_operator, node_agent, unique):
    reference, chaos = f"calm-{unique}", f"chaos-{unique}"
    calm_nodes, chaos_nodes = pool_nodes(f"calm-{unique}"), pool_nodes(f"chaos-{unique}")
    node_agent(calm_nodes + chaos_nodes)
    started = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(chaos_doc(reference, f"calm-{unique}")))
    try:
        wait_complete(cluster, reference, timeout=600)
        calm_s = time.monotonic() - started
        expected = results(cluster, reference, [n["name"] for n in calm_nodes])

        seed = random.randrange(2**32)
        rng = random.Random(seed)
        points = sorted(rng.uniform(1.0, calm_s) for _ in range(KILLS))
        print(f"chaos: seed {seed}, {KILLS} kills at {[round(p, 1) for p in points]} s (uninterrupted: {calm_s:.0f} s)")
        watch = JobWatch(cluster, chaos)
        watch.start()
        started = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=json.dumps(chaos_doc(chaos, f"chaos-{unique}")))
        kills = 0
        for point in points:
            time.sleep(max(0.0, point - (time.monotonic() - started)))
            if (get_eval(cluster, chaos).get("status") or {}).get("phase") == "Complete":
                break
            multinode_operator.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 2.0))
            multinode_operator.start()
        obj = wait_complete(cluster, chaos, timeout=900)
        watch.done.set()
        watch.join()
        names = [n["name"] for n in chaos_nodes]
        print(f"chaos: {kills} kills survived; {len(watch.seen)} Jobs, each made once: "
              f"{all(len(u) == 1 for u in watch.seen.values())}")
        assert kills >= 1, "the evaluation finished before the first kill point"

        # nothing doubled: every Job was made once, one per planned item and run across nodes
        doubled = {name: uids for name, uids in watch.seen.items() if len(uids) > 1}
        assert not doubled, f"Jobs made again after a kill: {doubled}"
        assert sorted(watch.seen) == sorted(j["metadata"]["name"] for j in jobs_of(cluster, chaos))
        # nothing lost: the same verdicts as the uninterrupted run, every item's run stored
        found = results(cluster, chaos, names)
        assert verdicts(found) == verdicts(expected), [
            (clause, r["verdict"], r["reason"], calm[clause]["reason"])
            for node, calm in zip(found, expected, strict=True)
            for clause, r in node.items() if r["verdict"] != calm[clause]["verdict"]]
        for node in names:
            cm = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{configmap_name(chaos, node)}")
            assert cm["metadata"]["annotations"]["cardeval.io/judged"] == "true"
        assert obj["status"]["summary"] == get_eval(cluster, reference)["status"]["summary"]
        # nothing left behind: the testing taint and the hold gone, the startup taint kept (the CPU stand-in
        # is never admitted), the node's result on it
        for node in names:
            o = cluster.api("GET", f"/api/v1/nodes/{node}")
            assert o["spec"]["taints"] == [TAINT], o["spec"]
            assert "cardeval.io/hold" not in o["metadata"]["annotations"], o["metadata"]
            assert "cardeval.io/held-by" not in o["metadata"]["labels"] and \
                o["metadata"]["labels"]["cardeval.io/validation"] == "failed", o["metadata"]["labels"]
            validated = next(c for c in o["status"]["conditions"] if c["type"] == "cardeval.io/Validated")
            cm = cluster.api("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{configmap_name(chaos, node)}")
            compliance = json.loads(cm["data"]["node-result.json"])["compliance"]
            assert validated["status"] == "False" and validated["reason"] == compliance, validated
        # Events: each once, none lost
        counts = {reason: len(items) for reason, items in events_of(cluster, chaos).items()}
        assert counts["Started"] == 1 and counts["Finished"] == 1 and counts["NodeEvaluated"] == 2, counts
        assert "NodeAdmitted" not in counts, counts
    finally:
        delete_eval(cluster, reference)
        delete_eval(cluster, chaos)
