"""Spec → work items: which workload runs where, for which clauses.

Clauses that share one run are grouped: one work item per (node, workload),
so that precision support (6.2.1.a–b) and peak compute (6.2.2.a) come from one
matmul sweep.  Work item names are deterministic (a restarted operator finds
the Jobs it already created instead of making new ones).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from cardeval.api.models import CardEvaluation, Profile
from cardeval.engine.catalog import Clause, Topology, select
from cardeval_workloads.available import OPERATOR_WORKLOADS, WORKLOADS

#: Per-profile time limit of one work item, unless the spec sets one.
DEFAULT_ITEM_TIMEOUT_S = {Profile.QUICK.value: 600, Profile.STANDARD.value: 4 * 3600,
                          Profile.FULL.value: 4 * 24 * 3600}

#: Topologies that need no workload: judged from node facts, the BMC or evidence.
NO_WORKLOAD = {Topology.CONTROL, Topology.BMC, Topology.ATTEST}

_TOPOLOGY_ORDER = [Topology.CARD, Topology.NODE, Topology.PROBE, Topology.MULTI_NODE]


@dataclass(frozen=True)
class WorkItem:
    name: str
    evaluation: str
    node: str
    workload: str
    topology: Topology
    cards: int
    clauses: tuple[str, ...]
    profile: str
    timeout_s: int
    params: tuple[tuple[str, str], ...] = ()

    def argv(self, device: str = "auto") -> list[str]:
        """The workload command line (after the interpreter)."""
        args = ["-m", "cardeval_workloads", self.workload, "--profile", self.profile,
                "--device", device, "--devices", "all"]
        for key, value in self.params:
            args += ["--param", f"{key}={value}"]
        return args


@dataclass
class Plan:
    evaluation: str
    generation: int | None
    card_type: str
    profile: str
    nodes: list[str]
    selected: list[Clause]
    excluded: list[Clause]
    items: list[WorkItem]
    #: workload name → clause ids that need it but it does not exist in this version.
    missing_workloads: dict[str, list[str]] = field(default_factory=dict)
    #: workload → why no per-node item runs it (a multi-node workload: no launcher runs it yet).
    unlaunched: dict[str, str] = field(default_factory=dict)

    def items_for(self, node: str) -> list[WorkItem]:
        return [i for i in self.items if i.node == node]


def item_name(evaluation: str, node: str, workload: str) -> str:
    """A DNS-1123 label (≤ 63) unique per (evaluation, node, workload), stable across restarts."""
    digest = hashlib.sha256(f"{evaluation}\0{node}\0{workload}".encode()).hexdigest()[:10]
    head = re.sub(r"[^a-z0-9-]", "-", f"{evaluation[:24]}-{workload[:16]}".lower()).strip("-")
    return f"{head}-{digest}"


def plan(evaluation: CardEvaluation, nodes: list[str], operator_checks: frozenset[str] | set[str] = frozenset()
         ) -> Plan:
    """``operator_checks``: workloads of ``OPERATOR_WORKLOADS`` the executor runs itself (the
    operator's device-plugin check); their items come first on each node. Without it their
    clauses get no item and their rules judge them (NotRun, with the reason)."""
    spec = evaluation.spec
    selected, excluded = select(spec.card_type, spec.clauses.include, spec.clauses.exclude)
    timeout = spec.item_timeout_seconds or DEFAULT_ITEM_TIMEOUT_S[spec.profile]
    attested = {e.clause for e in spec.evidence}

    by_workload: dict[str, list[Clause]] = {}
    missing: dict[str, list[str]] = {}
    for clause in selected:
        if clause.topology in NO_WORKLOAD or (clause.id in attested and clause.attestable):
            continue
        for workload in clause.workloads:
            if workload in OPERATOR_WORKLOADS:
                if workload in operator_checks:
                    by_workload.setdefault(workload, []).append(clause)
                continue  # not missing: this executor does not run it (local, or an operator without it)
            if workload in WORKLOADS:
                by_workload.setdefault(workload, []).append(clause)
            else:
                missing.setdefault(workload, []).append(clause.id)

    items: list[WorkItem] = []
    unlaunched: dict[str, str] = {}
    # Operator-run checks first: they judge the node's view of its cards (capacity, the plugin),
    # which must not wait behind measurements, nor be skipped when the cards are missing.
    ordered = sorted(by_workload.items(), key=lambda kv: kv[0] not in OPERATOR_WORKLOADS)
    for node in nodes:
        for workload, clauses in ordered:
            topology = max((c.topology for c in clauses), key=_TOPOLOGY_ORDER.index)
            if topology == Topology.MULTI_NODE:
                # One run across nodes (MPIJob or Indexed Job), not an item per node; this
                # version builds those objects (operator/multinode.py) but does not launch them.
                unlaunched[workload] = (f"the {workload} workload runs across nodes (MPIJob or Indexed Job); "
                                        "multi-node runs are not launched in this version")
                continue
            items.append(WorkItem(
                name=item_name(evaluation.metadata.name, node, workload),
                evaluation=evaluation.metadata.name, node=node, workload=workload, topology=topology,
                cards=spec.expected_cards_per_node, clauses=tuple(c.id for c in clauses),
                profile=spec.profile, timeout_s=timeout,
            ))
    return Plan(evaluation.metadata.name, evaluation.metadata.generation, spec.card_type, spec.profile,
                list(nodes), selected, excluded, items, missing, unlaunched)
