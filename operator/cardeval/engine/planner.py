"""Spec → work items: which workload runs where, for which clauses.

Clauses that share one run are grouped: one work item per (node, workload),
so that precision support (6.2.1.a–b) and peak compute (6.2.2.a) come from one
matmul sweep.  Work item names are deterministic (a restarted operator finds
the Jobs it already created instead of making new ones).

Some runs span several nodes and are no per-node item: the workloads of the
inter-node clauses (``Topology.MULTI_NODE``), and the cluster run of a workload a
clause names as ``<workload>.cluster`` (cluster linearity, 6.2.5.6, times the
same training step on every card of the cluster).  The plan lists them in
``across_nodes``; :func:`plan_multinode` turns them into :class:`MultiNodeItem`s on
the nodes ``spec.multiNode`` chooses, which the operator launches (an MPIJob or an
Indexed Job); a local evaluation, on one machine, cannot.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cardeval.api.models import CardEvaluation, EvaluationSpec, Launcher, Profile
from cardeval.engine.catalog import Clause, Topology, select
from cardeval.engine.facts import WorkloadRun
from cardeval_workloads import foreign_model_case, restart_protocol, training_case
from cardeval_workloads.available import CONFIGURED_WORKLOADS, OPERATOR_WORKLOADS, WORKLOADS

#: Per-profile time limit of one work item, unless the spec sets one.
DEFAULT_ITEM_TIMEOUT_S = {Profile.QUICK.value: 600, Profile.STANDARD.value: 4 * 3600,
                          Profile.FULL.value: 4 * 24 * 3600}

#: Topologies that need no workload: judged from node facts or evidence.
NO_WORKLOAD = {Topology.CONTROL, Topology.ATTEST}

_TOPOLOGY_ORDER = [Topology.CARD, Topology.NODE, Topology.BMC, Topology.PROBE, Topology.MULTI_NODE]

#: A clause's workload named ``<workload>.cluster``: that workload's run across the cluster's nodes.
CLUSTER_RUN = ".cluster"

#: Slack over a run of a requested duration (the stress test): setup, calibration, the final checks.
DURATION_SLACK = 1.1
DURATION_MARGIN_S = 600
#: The workload whose engine path (6.3.3.b) ``spec.inferenceEngine`` replaces.
ENGINE_WORKLOAD = "infer"
#: The workload that runs the card's cryptography (6.4.b-c): planned only where ``spec.crypto`` declares its tool.
CRYPTO_WORKLOAD = "crypto"


def cluster_device(spec: EvaluationSpec) -> str:
    """The ``--device`` of every workload pod: the cards (never falling back to the host CPU), or the
    host CPU when the spec asks for the stand-in explicitly."""
    return "cpu" if spec.cpu_stand_in else "accelerator"


@dataclass(frozen=True)
class GivenParam:
    """One threshold of a clause as the ``--param`` of the workload that takes it."""

    workload: str
    param: str
    key: str
    value: str


def given_params(clause: Clause, spec: EvaluationSpec) -> list[GivenParam]:
    """The ``--param``s ``clause``'s thresholds become (``Clause.params``), with the workload of each."""
    given = spec.thresholds.get(clause.id, {})
    out = []
    for key, to in clause.params.items():
        if to.only_when_set and key not in given:
            continue
        value = given.get(key, clause.defaults(spec.training_dataset)[key]) * to.scale
        out.append(GivenParam(clause.takes(to), to.param, key, f"{value:g}"))
    return out


def workload_params(clauses: list[Clause], spec: EvaluationSpec, workload: str | None = None
                    ) -> tuple[tuple[str, str], ...]:
    """The ``--param``s the clauses' thresholds become for ``workload`` (None: for any of theirs), the
    training case the spec names for a workload that trains it (``training_case.WORKLOADS``), the foreign
    model's files (relative to its volume: ``foreign_model_case``), and the inference engine it configures
    for the workload that runs 6.3.3.b's engine (:data:`ENGINE_WORKLOAD`)."""
    out = {p.param: p.value for clause in clauses for p in given_params(clause, spec)
           if workload is None or p.workload == workload}
    if workload in training_case.WORKLOADS and spec.training_dataset != "digits":
        out["dataset"] = spec.training_dataset
    if workload == foreign_model_case.WORKLOAD and spec.foreign_model is not None:
        given = spec.foreign_model
        out.update({k: v for k, v in (("model", given.model), ("card", given.card),
                                      ("dataset_dir", given.dataset_dir)) if v is not None})
    if workload == ENGINE_WORKLOAD and spec.inference_engine is not None:
        out["engine_command"] = json.dumps(spec.inference_engine.command)
        out["engine_name"] = spec.inference_engine.name
    if workload == CRYPTO_WORKLOAD and spec.crypto is not None:
        out["crypto_command"] = json.dumps(spec.crypto.command)
        out["algorithms"] = ",".join(spec.crypto.algorithms)
        if spec.crypto.link_command is not None:
            out["link_command"] = json.dumps(spec.crypto.link_command)
    return tuple(sorted(out.items()))


def needed_seconds(params: tuple[tuple[str, str], ...]) -> int:
    """The time a run of the requested ``duration_s`` needs, with its slack (0 when none is requested)."""
    duration = dict(params).get("duration_s")
    return int(float(duration) * DURATION_SLACK) + DURATION_MARGIN_S if duration is not None else 0


def program_of(run_key: str) -> str:
    """The workload a run key starts: ``train-parallel.cluster`` → ``train-parallel``."""
    return run_key[:-len(CLUSTER_RUN)] if run_key.endswith(CLUSTER_RUN) else run_key


def local_reason(run_key: str) -> str:
    """Why a run across nodes has no result where nothing launches it (a local evaluation)."""
    return (f"the {run_key} run spans several nodes (an MPIJob or Indexed Job the operator launches from "
            "spec.multiNode); a local evaluation covers one machine")


@dataclass(frozen=True)
class WorkItem:
    name: str
    node: str
    workload: str
    topology: Topology
    cards: int
    clauses: tuple[str, ...]
    profile: str
    timeout_s: int
    params: tuple[tuple[str, str], ...] = ()
    #: The node's round (``spec.revalidation``): its Jobs are new objects each round.
    round: int = 0

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
    #: Run key → the clause ids it serves, for runs across nodes (no per-node item runs them).
    across_nodes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def items_for(self, node: str) -> list[WorkItem]:
        return [i for i in self.items if i.node == node]


def item_name(evaluation: str, node: str, workload: str, round_: int = 0) -> str:
    """A DNS-1123 label (≤ 63) unique per (evaluation, node, workload, round), stable across restarts."""
    digest = hashlib.sha256(f"{evaluation}\0{node}\0{workload}".encode()).hexdigest()[:10]
    head = re.sub(r"[^a-z0-9-]", "-", f"{evaluation[:24]}-{workload[:16]}".lower()).strip("-")
    return f"{head}-{digest}" + (f"-r{round_}" if round_ else "")


def configured_for(spec: EvaluationSpec) -> frozenset[str]:
    """The ``CONFIGURED_WORKLOADS`` the spec gives the access for: ``spec.bmc``, the BMC's; and the restart
    through it only where ``spec.bmc.restart`` opts in."""
    if spec.bmc is None:
        return frozenset()
    return CONFIGURED_WORKLOADS - (frozenset() if spec.bmc.restart is not None else {restart_protocol.WORKLOAD})


def plan(evaluation: CardEvaluation, nodes: list[str], operator_checks: frozenset[str] | set[str] = frozenset(),
         rounds: Mapping[str, int] | None = None) -> Plan:
    """``operator_checks``: workloads of ``OPERATOR_WORKLOADS`` the executor runs itself (the
    operator's device-plugin check; their items come first on each node) and of
    ``CONFIGURED_WORKLOADS`` it holds the access for (the BMC's). Without it their clauses get no
    item and their rules judge them (NotRun, with the reason). ``rounds``: each node's round
    (``spec.revalidation``), in its items' names."""
    spec = evaluation.spec
    selected, excluded = select(spec.card_type, spec.clauses.include, spec.clauses.exclude)
    timeout = spec.item_timeout_seconds or DEFAULT_ITEM_TIMEOUT_S[spec.profile]
    by_workload: dict[str, list[Clause]] = {}
    missing: dict[str, list[str]] = {}
    across: dict[str, list[str]] = {}
    for clause in selected:
        # An attested clause is still measured where it can be: a measurement that ran wins (judge.py).
        if clause.topology in NO_WORKLOAD:
            continue
        for workload in clause.workloads:
            if clause.topology == Topology.MULTI_NODE or workload.endswith(CLUSTER_RUN):
                known = program_of(workload) in WORKLOADS
                (across if known else missing).setdefault(workload, []).append(clause.id)
                continue
            if workload == CRYPTO_WORKLOAD and spec.crypto is None:
                continue  # not missing: nothing is declared to run it (its rule says so)
            if workload in OPERATOR_WORKLOADS | CONFIGURED_WORKLOADS:
                if workload in operator_checks:
                    by_workload.setdefault(workload, []).append(clause)
                continue  # not missing: this executor does not run it (local, or an operator without it)
            if workload in WORKLOADS:
                by_workload.setdefault(workload, []).append(clause)
            else:
                missing.setdefault(workload, []).append(clause.id)

    items: list[WorkItem] = []
    # Operator-run checks first: they judge the node's view of its cards (capacity, the plugin),
    # which must not wait behind measurements, nor be skipped when the cards are missing.
    # The restart last: it ends whatever runs on the node, and is judged on the cards found after it.
    ordered = sorted(by_workload.items(),
                     key=lambda kv: (kv[0] == restart_protocol.WORKLOAD, kv[0] not in OPERATOR_WORKLOADS))
    for node in nodes:
        for workload, clauses in ordered:
            topology = max((c.topology for c in clauses), key=_TOPOLOGY_ORDER.index)
            params = workload_params(clauses, spec, workload)
            round_ = (rounds or {}).get(node, 0)
            items.append(WorkItem(
                name=item_name(evaluation.metadata.name, node, workload, round_), node=node, workload=workload,
                topology=topology, cards=spec.expected_cards_per_node, clauses=tuple(c.id for c in clauses),
                profile=spec.profile, timeout_s=max(timeout, needed_seconds(params)), params=params, round=round_,
            ))
    return Plan(evaluation.metadata.name, evaluation.metadata.generation, spec.card_type, spec.profile,
                list(nodes), selected, excluded, items, missing,
                {k: tuple(v) for k, v in across.items()})


@dataclass(frozen=True)
class MultiNodeItem:
    """One run across ``nodes``: the multi-node counterpart of ``WorkItem``.

    ``key`` names the run (its result is stored under it on each node): the workload
    itself for an inter-node clause, ``<workload>.cluster`` for a workload whose
    per-node run is planned too (the cluster run of ``train-parallel``)."""

    name: str
    key: str
    workload: str
    nodes: tuple[str, ...]
    cards_per_node: int
    clauses: tuple[str, ...]
    profile: str
    timeout_s: int
    launcher: str
    params: tuple[tuple[str, str], ...] = ()
    #: ``--device`` of every rank (``cluster_device``): the cards, or the host CPU stand-in.
    device: str = "accelerator"

    @property
    def ranks(self) -> int:
        return len(self.nodes) * self.cards_per_node

    def argv(self) -> list[str]:
        return self.work_item(self.nodes[0]).argv(self.device)

    def work_item(self, node: str) -> WorkItem:
        """The per-node view of the run (its command line is a per-node item's)."""
        return WorkItem(name=self.name, node=node, workload=self.workload, topology=Topology.MULTI_NODE,
                        cards=self.cards_per_node, clauses=self.clauses, profile=self.profile,
                        timeout_s=self.timeout_s, params=self.params)


@dataclass
class MultiNodePlan:
    items: list[MultiNodeItem] = field(default_factory=list)
    #: Why no multi-node run is planned (no spec.multiNode, too few nodes), for the clauses' NotRun.
    not_run: str | None = None
    #: run key → the clause ids it serves, planned or not.
    workloads: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def items_of(self, node: str) -> list[MultiNodeItem]:
        """The runs ``node`` takes part in, in the order they run."""
        return [i for i in self.items if node in i.nodes]


def plan_multinode(evaluation: CardEvaluation, the_plan: Plan) -> MultiNodePlan:
    """The multi-node items of an evaluation: one per run across nodes of its plan (``Plan.across_nodes``),
    on the first ``spec.multiNode.nodes`` of its nodes by name."""
    spec = evaluation.spec
    out = MultiNodePlan(workloads=dict(the_plan.across_nodes))
    if not the_plan.across_nodes:
        return out
    if spec.multi_node is None:
        out.not_run = ("spec.multiNode is not set: the inter-node clauses and cluster linearity need a run "
                       "across nodes (set spec.multiNode.nodes ≥ 2 and its launcher)")
        return out
    want = spec.multi_node.nodes
    nodes = sorted(the_plan.nodes)
    if len(nodes) < want:
        out.not_run = (f"spec.multiNode.nodes is {want} but only {len(nodes)} node(s) match "
                       "spec.nodeSelector")
        return out
    chosen = tuple(nodes[:want])
    launcher = Launcher(spec.multi_node.launcher).value
    timeout = the_plan.items[0].timeout_s if the_plan.items else (
        spec.item_timeout_seconds or DEFAULT_ITEM_TIMEOUT_S[spec.profile])
    for key, clauses in sorted(the_plan.across_nodes.items()):
        out.items.append(MultiNodeItem(
            name=item_name(evaluation.metadata.name, "multi-node", key), key=key, workload=program_of(key),
            nodes=chosen, cards_per_node=spec.expected_cards_per_node, clauses=clauses, profile=spec.profile,
            timeout_s=timeout, launcher=launcher, device=cluster_device(spec)))
    return out


def not_run_outside(mp: MultiNodePlan, node: str) -> dict[str, WorkloadRun]:
    """The runs across nodes ``node`` takes no part in, each as ``not_run`` with the reason: every
    run when none was planned (no ``spec.multiNode``, too few nodes), else those it is not a member
    of. A member's own runs are stored on it when they end and read with its other runs."""
    by_key = {i.key: i for i in mp.items}
    out: dict[str, WorkloadRun] = {}
    for key in mp.workloads:
        item = by_key.get(key)
        if item is None:
            out[key] = WorkloadRun(key, not_run=mp.not_run or "no multi-node run planned")
        elif node not in item.nodes:
            out[key] = WorkloadRun(key, not_run=(
                f"{node} is not one of the {len(item.nodes)} nodes of the multi-node run "
                f"({', '.join(item.nodes)[:300]}; spec.multiNode.nodes)"))
    return out
