"""What one reconcile pass over one evaluation works with: the observed state, and what it changed.

``reconcile`` builds a :class:`Pass` from the API and hands its parts to the steps;
a step is given only the parts it works on. :class:`PassScope` is the part every
step reads and none writes: which evaluation, which generation, and the Node
objects already read this pass. :class:`Observed` is what the pass found of the
runs across nodes, which ``multinode_runner`` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cardeval.api.models import CardEvaluation, EvaluationStatus, NodeResult
from cardeval.engine.planner import MultiNodeItem, MultiNodePlan, Plan
from cardeval.operator.results import StoredNode
from cardeval.operator.scheduler.queue import NodeQueue


@dataclass
class PassScope:
    """The evaluation a pass works on, and the Node objects it has read (``node`` reads the rest)."""

    evaluation: CardEvaluation
    uid: str
    generation: int
    #: Reads a Node object from the API (None: it does not exist).
    read_node: Callable[[str], dict[str, Any] | None]
    node_objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.evaluation.metadata.name

    def node(self, name: str) -> dict[str, Any] | None:
        """The Node object read this pass, or read now."""
        return self.node_objects.get(name) or self.read_node(name)


@dataclass
class Observed:
    """The multi-node side of one pass: the plan and this generation's objects."""

    plan: MultiNodePlan
    #: item name → (kind, the Job or MPIJob) of this generation.
    objects: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    #: item names whose older-generation object is still being deleted.
    blocked: set[str] = field(default_factory=set)
    #: item names with a headless Service of this generation.
    services: set[str] = field(default_factory=set)

    def in_flight(self, queues: dict[str, NodeQueue]) -> MultiNodeItem | None:
        """The run that holds its members' cards now: created and not yet stored on its members."""
        for item in self.plan.items:
            if item.name in self.objects and any(
                    item.key not in queues[n].done for n in item.nodes if not queues[n].judged):
                return item
        return None


@dataclass
class Pass:
    """Everything one pass works with (observed state plus what it changed)."""

    scope: PassScope
    prev: EvaluationStatus | None
    plan: Plan
    queues: dict[str, NodeQueue]
    stored: dict[str, StoredNode]
    jobs: dict[str, dict[str, Any]]
    multi: Observed
    results: dict[str, NodeResult] = field(default_factory=dict)
    #: node → why its work waits (``node_hold``: another pod holds its cards), for its status message.
    waiting_idle: dict[str, str] = field(default_factory=dict)

    @property
    def evaluation(self) -> CardEvaluation:
        return self.scope.evaluation

    @property
    def uid(self) -> str:
        return self.scope.uid

    @property
    def generation(self) -> int:
        return self.scope.generation

    @property
    def node_objects(self) -> dict[str, dict[str, Any]]:
        return self.scope.node_objects
