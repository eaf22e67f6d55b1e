"""Per-node queues, nodes in parallel: which work items start now.  Pure.

Work items on one node never overlap (their measurements would interfere): a
node runs its items one after another, in plan order.  Up to
``spec.maxNodesInParallel`` nodes are *in progress* at once — a node is in
progress from its first started item until it is judged — so a large fleet is
evaluated in waves of whole nodes, in node-name order, instead of every node
holding a half-finished queue.  The one exception: a node *waiting* — its own
items done, a run across nodes still to come (``multinode_runner``) — holds no
cards and is not counted, or the members of a run and the nodes queued behind
them could wait on each other forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cardeval.engine.planner import WorkItem


@dataclass
class NodeQueue:
    node: str
    items: list[WorkItem]
    #: Workloads whose run is stored (collected, or recorded as not run).
    done: set[str] = field(default_factory=set)
    #: Workloads with a Job of this generation that has not been collected yet.
    started: set[str] = field(default_factory=set)
    #: Work item names that cannot be created yet (an older generation's Job is still being deleted).
    blocked: set[str] = field(default_factory=set)
    judged: bool = False
    #: Keys of the multi-node runs this node takes part in that are not stored on it yet: its
    #: judging waits for them (``reconcile``/``multinode_runner``).
    across_nodes: tuple[str, ...] = ()
    #: Its own items are done and it waits for the other members of a multi-node run, holding
    #: no cards: it does not count toward ``maxNodesInParallel`` (else a run whose members fall
    #: into different waves could never start).
    waiting: bool = False

    @property
    def in_progress(self) -> bool:
        return not self.judged and bool(self.done or self.started)

    @property
    def all_done(self) -> bool:
        return all(i.workload in self.done for i in self.items)

    @property
    def running(self) -> bool:
        return any(w not in self.done for w in self.started)

    def next_item(self) -> WorkItem | None:
        for item in self.items:
            if item.workload not in self.done:
                if item.workload in self.started or item.name in self.blocked:
                    return None
                return item
        return None


def next_items(queues: list[NodeQueue], max_nodes_in_parallel: int) -> list[WorkItem]:
    """The items to start now: the next item of each in-progress node that is idle, then the
    first item of fresh nodes (name order) while fewer than ``max_nodes_in_parallel`` are in progress."""
    starts: list[WorkItem] = []
    active = 0
    for q in queues:
        if q.in_progress and not q.waiting:
            active += 1
            if not q.running and not q.all_done:
                item = q.next_item()
                if item is not None:
                    starts.append(item)
    for q in sorted(queues, key=lambda q: q.node):
        if active >= max_nodes_in_parallel:
            break
        if q.judged or q.in_progress or not q.items:
            continue
        item = q.next_item()
        if item is not None:
            starts.append(item)
            active += 1
    return starts
