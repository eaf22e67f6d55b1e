"""The per-node results ConfigMap: what survives an operator restart.

One ConfigMap per (evaluation, node), owned by the evaluation, in the
operator's namespace.  As soon as a work item's Job is collected its
``WorkloadRun`` is written here (``run.<workload>.json``: the envelope, its
power trace thinned for the report's plot, or the reason there is none); once
every item of the node is stored, the node is judged and its ``NodeResult`` is written too
(``node-result.json``).  The evaluation's status is a summary built from these,
so a restarted operator re-derives everything from Jobs and ConfigMaps.

A node evaluated again (``spec.revalidation``) starts its next round in one
write (:func:`start_round`): its result moves into ``history.json`` (the last
``historyLimit`` rounds, newest first: when, why the next round, the verdict
counts, the shall clauses not met), its runs are dropped, and the annotation
``cardeval.io/round`` counts up (the round's Jobs carry it, so an older
round's Job is never collected as the new round's run).

The annotations say what the data holds (``cardeval.io/collected``: stored
workloads; ``cardeval.io/judged``), so a pass reads metadata only and fetches
a ConfigMap's data only when it changed.  Sizes: an envelope is capped at
``RUN_LIMIT`` bytes (the verdict-bearing compact form beyond that), so a node's
ConfigMap stays far below the 1 MiB object limit.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass

from cardeval.api.models import RESULTS_KEY, NodeResult, ResultsRef
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.judge import blocking
from cardeval.engine.series import thin_power
from cardeval.operator import labels
from cardeval.operator.kube import ApiError, KubeApi
from cardeval_workloads.envelope import Envelope

RUN_PREFIX = "run."
RUN_LIMIT = 96 * 1024
HISTORY_KEY = "history.json"


def configmap_name(evaluation: str, node: str) -> str:
    digest = hashlib.sha256(f"{evaluation}\0{node}".encode()).hexdigest()[:12]
    return f"{evaluation}-node-{digest}"


def run_key(workload: str) -> str:
    return f"{RUN_PREFIX}{workload}.json"


# ---------------------------------------------------------------- (de)serialisation, pure
def encode_run(run: WorkloadRun) -> str:
    doc: dict = {"workload": run.workload}
    if run.envelope is not None:
        # The power trace thinned for the report's plot when it fits; never at the cost of a metric.
        text = run.envelope.model_copy(update={"power": thin_power(run.envelope.power)}).to_json()
        if len(text.encode()) > RUN_LIMIT:
            text = run.envelope.model_copy(update={"power": []}).to_json()
        if len(text.encode()) > RUN_LIMIT:
            text = run.envelope.to_compact_json(limit=RUN_LIMIT)
        doc["envelope"] = json.loads(text)
    if run.error:
        doc["error"] = run.error
    if run.not_run:
        doc["notRun"] = run.not_run
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def decode_run(workload: str, text: str) -> WorkloadRun:
    try:
        doc = json.loads(text)
        envelope = Envelope.model_validate(doc["envelope"]) if doc.get("envelope") else None
        return WorkloadRun(workload, envelope=envelope, error=doc.get("error"), not_run=doc.get("notRun"))
    except (ValueError, KeyError, TypeError) as exc:
        return WorkloadRun(workload, error=f"the stored result of workload {workload} is unreadable: {exc}")


@dataclass(frozen=True)
class StoredNode:
    """What a results ConfigMap's metadata says (no data needed)."""

    name: str
    node: str
    generation: int | None
    collected: frozenset[str]
    judged: bool
    resource_version: str
    owner_uids: frozenset[str] = frozenset()
    round: int = 0

    @classmethod
    def from_meta(cls, obj: dict) -> StoredNode:
        meta = obj.get("metadata") or {}
        ann = meta.get("annotations") or {}
        try:
            generation = int((meta.get("labels") or {}).get(labels.GENERATION, ""))
        except ValueError:
            generation = None
        collected = frozenset(w for w in ann.get(labels.COLLECTED, "").split(",") if w)
        owners = frozenset(r.get("uid", "") for r in meta.get("ownerReferences") or [])
        round_ = ann.get(labels.ROUND, "0")
        return cls(meta.get("name", ""), ann.get(labels.NODE, ""), generation, collected,
                   ann.get(labels.JUDGED) == "true", meta.get("resourceVersion", ""), owners,
                   int(round_) if round_.isdigit() else 0)


def new_configmap(evaluation: str, uid: str, generation: int, node: str, namespace: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(evaluation, node), "namespace": namespace,
            "labels": {labels.EVALUATION: evaluation, labels.NODE_HASH: labels.node_hash(node),
                       labels.GENERATION: str(generation), labels.COMPONENT: "results",
                       labels.MANAGED_BY: labels.MANAGER},
            "annotations": {labels.NODE: node, labels.COLLECTED: ""},
            "ownerReferences": [labels.owner_reference(evaluation, uid)],
        },
        "data": {},
    }


def put_run(cm: dict, run: WorkloadRun) -> None:
    cm.setdefault("data", {})[run_key(run.workload)] = encode_run(run)
    ann = cm["metadata"].setdefault("annotations", {})
    collected = {w for w in ann.get(labels.COLLECTED, "").split(",") if w} | {run.workload}
    ann[labels.COLLECTED] = ",".join(sorted(collected))


def put_result(cm: dict, result: NodeResult) -> None:
    cm.setdefault("data", {})[RESULTS_KEY] = json.dumps(result.wire(), ensure_ascii=False,
                                                       separators=(",", ":"))
    cm["metadata"].setdefault("annotations", {})[labels.JUDGED] = "true"


def start_round(cm: dict, why: str, limit: int) -> int:
    """The node's next round (``spec.revalidation``): its result into the history, its runs dropped; the new
    round's number."""
    data = cm.setdefault("data", {})
    ann = cm["metadata"].setdefault("annotations", {})
    previous = read_result(cm)
    history = read_history(cm)
    if previous is not None:
        history.insert(0, history_entry(previous, why))
    for key in [k for k in data if k.startswith(RUN_PREFIX) or k == RESULTS_KEY]:
        del data[key]
    if limit and history:
        data[HISTORY_KEY] = json.dumps(history[:limit], ensure_ascii=False, separators=(",", ":"))
    else:
        data.pop(HISTORY_KEY, None)
    round_ = int(ann.get(labels.ROUND, "0") or 0) + 1
    ann.update({labels.ROUND: str(round_), labels.COLLECTED: "", labels.JUDGED: "false"})
    return round_


def history_entry(result: NodeResult, why: str) -> dict:
    """One earlier round, small: enough to see when a node changed and why it was evaluated again."""
    c = result.counts
    return {"round": result.round, "judgedAt": result.judged_at.isoformat() if result.judged_at else None,
            "bootID": result.boot_id, "compliant": result.compliant, "compliance": result.compliance,
            "counts": c.wire(), "blocking": blocking(result.results)[:32], "next": why}


def read_history(cm: dict) -> list[dict]:
    text = (cm.get("data") or {}).get(HISTORY_KEY)
    try:
        history = json.loads(text) if text else []
    except ValueError:
        return []
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []


def read_runs(cm: dict) -> dict[str, WorkloadRun]:
    runs = {}
    for key, text in (cm.get("data") or {}).items():
        if key.startswith(RUN_PREFIX) and key.endswith(".json"):
            workload = key[len(RUN_PREFIX):-len(".json")]
            runs[workload] = decode_run(workload, text)
    return runs


def read_result(cm: dict) -> NodeResult | None:
    text = (cm.get("data") or {}).get(RESULTS_KEY)
    if not text:
        return None
    try:
        return NodeResult.model_validate(json.loads(text))
    except ValueError:
        return None


def results_ref(cm_name: str, namespace: str) -> ResultsRef:
    return ResultsRef(kind="ConfigMap", name=cm_name, namespace=namespace)


# ---------------------------------------------------------------- the store, with a cache
class ResultStore:
    """Reads and writes results ConfigMaps; full objects are cached by resourceVersion."""

    def __init__(self, kube: KubeApi, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._cache: dict[str, dict] = {}
        self._parsed: dict[tuple[str, str], NodeResult | None] = {}
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps"

    def scan(self, evaluation: str) -> list[StoredNode]:
        """Metadata of this evaluation's results ConfigMaps (all generations)."""
        items = self.kube.list(self.path, label_selector=labels.selector(evaluation, component="results"),
                               metadata_only=True)
        return [StoredNode.from_meta(o) for o in items]

    def load(self, stored: StoredNode) -> dict | None:
        with self._lock:
            cached = self._cache.get(stored.name)
        if cached is not None and cached["metadata"].get("resourceVersion") == stored.resource_version:
            return cached
        obj = self.kube.get_or_none(f"{self.path}/{stored.name}")
        if obj is not None:
            with self._lock:
                self._cache[stored.name] = obj
        return obj

    def result(self, stored: StoredNode) -> NodeResult | None:
        key = (stored.name, stored.resource_version)
        with self._lock:
            if key in self._parsed:
                return self._parsed[key]
        cm = self.load(stored)
        result = read_result(cm) if cm else None
        with self._lock:
            self._parsed = {k: v for k, v in self._parsed.items() if k[0] != stored.name}
            self._parsed[key] = result
        return result

    def write(self, cm: dict) -> dict:
        """Create or replace (optimistic concurrency through resourceVersion); caches the answer."""
        name = cm["metadata"]["name"]
        try:
            if cm["metadata"].get("resourceVersion"):
                saved = self.kube.replace(f"{self.path}/{name}", cm)
            else:
                saved = self.kube.create(self.path, cm)
        except ApiError as exc:
            if exc.conflict:  # changed (or created) behind our back: the next pass reads it afresh
                self.forget(name)
            raise
        with self._lock:
            self._cache[name] = saved
        return saved

    def delete(self, name: str) -> None:
        self.kube.delete(f"{self.path}/{name}", propagation=None)
        self.forget(name)

    def forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)
            self._parsed = {k: v for k, v in self._parsed.items() if k[0] != name}

    def fresh(self, evaluation: str, uid: str, generation: int, node: str) -> dict:
        """The current ConfigMap of a node to modify (a deep copy), or a new one."""
        name = configmap_name(evaluation, node)
        with self._lock:
            cached = self._cache.get(name)
        obj = cached or self.kube.get_or_none(f"{self.path}/{name}")
        if obj is None:
            return new_configmap(evaluation, uid, generation, node, self.namespace)
        return json.loads(json.dumps(obj))


__all__ = ["ApiError", "ResultStore", "StoredNode", "configmap_name", "put_run", "put_result", "read_runs",
           "read_result", "read_history", "start_round", "encode_run", "decode_run", "results_ref"]
