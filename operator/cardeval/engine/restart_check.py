"""Step g's evidence (8.3.4.2 g / 8.4.4.2 g): the restart request's run, with what its executor saw after it.

The ``bmc-restart`` run says whether the BMC accepted the restart
(``restart.requested``). A restart is observed from outside the node, so the
executor — the operator, which cordoned and drained the node first — adds:

* ``restart.new_boot`` — the Node came back Ready with a boot ID other than the
  one recorded before the request, within the time allowed; not back in time is
  ``False``: the node did not come back from the restart;
* ``restart.cards_recognised`` — the re-check on the node after its new boot
  (``restart_protocol.RECHECK_WORKLOAD``, all the node's cards): its pod saw every
  card it was given, and each is enumerated and computes correctly
  (``RECHECK_CHECKS``). A node that did not come back has not recognised its
  cards (``False``); a re-check that gives no result leaves it undetermined.

No accepted request: both undetermined (there was nothing to observe). The run's
devices are the re-check's — the cards found after the new boot, none without one —
so a run on the CPU stand-in says so; the request's own (the host of the node it ran
on, another one) are not the cards under test.
"""

from __future__ import annotations

from dataclasses import dataclass

from cardeval.engine.facts import WorkloadRun
from cardeval_workloads import restart_protocol as protocol
from cardeval_workloads.envelope import Check


@dataclass(frozen=True)
class Boot:
    """The Node's boot ID before the request and after it (None: not back, Ready, within ``timeout_s``)."""

    before: str
    after: str | None
    waited_s: float
    timeout_s: int


def requested(run: WorkloadRun) -> bool:
    """Whether the BMC accepted the restart request of this (usable) run."""
    assert run.envelope is not None
    return any(c.ok is True for c in run.envelope.checks_named(protocol.REQUESTED))


def _recognised(boot: Boot, recheck: WorkloadRun | None, cards: int) -> Check:
    name = protocol.CARDS_RECOGNISED
    if boot.after is None:
        return Check(name=name, ok=False, detail=f"the node did not come back within {boot.timeout_s} s of the "
                                                 "restart: its cards were not found again")
    if recheck is None or not recheck.usable or recheck.envelope is None:
        why = recheck.failure() if recheck is not None else "the re-check did not run"
        return Check(name=name, ok=None, detail=f"after the new boot: {why}"[:1000])
    env = recheck.envelope
    seen = [d for d in env.devices if d.is_accelerator]
    stand_in = bool(env.devices) and not seen
    problems: list[str] = []
    passed: list[str] = []
    if not stand_in and len(seen) != cards:
        problems.append(f"the re-check's pod was given {cards} card(s) and saw {len(seen)}")
    undetermined: list[str] = []
    for check_name in protocol.RECHECK_CHECKS:
        found = env.checks_named(check_name)
        if not found:
            undetermined.append(f"{check_name} not reported")
        for c in found:
            where = check_name if c.device is None else f"{check_name}[card {c.device}]"
            (passed if c.ok is True else problems if c.ok is False else undetermined).append(
                f"{where}: {c.detail}"[:240])
    on = "the host CPU stand-in" if stand_in else f"{len(seen)} card(s)"
    if problems:
        return Check(name=name, ok=False, detail=f"after the new boot, on {on}: " + "; ".join(problems)[:900])
    if undetermined:
        return Check(name=name, ok=None, detail=f"after the new boot, on {on}: " + "; ".join(undetermined)[:900])
    return Check(name=name, ok=True, detail=f"after the new boot, on {on}: " + "; ".join(passed)[:900],
                 observed=len(seen), expected=cards)


def compose(request: WorkloadRun, boot: Boot | None, recheck: WorkloadRun | None, cards: int) -> WorkloadRun:
    """The ``bmc-restart`` run with ``restart.new_boot`` and ``restart.cards_recognised`` added (unchanged when the
    request gave no usable result: its error judges the step)."""
    if not request.usable or request.envelope is None:
        return request
    if boot is None or not requested(request):
        why = "no restart was requested (see restart.requested)"
        added = [Check(name=protocol.NEW_BOOT, ok=None, detail=why),
                 Check(name=protocol.CARDS_RECOGNISED, ok=None, detail=why)]
        devices = []
    else:
        came_back = boot.after is not None
        added = [Check(name=protocol.NEW_BOOT, ok=came_back,
                       detail=(f"boot ID {boot.before} before the restart, {boot.after} after, Ready again "
                               f"{boot.waited_s:.0f} s after the request" if came_back else
                               f"boot ID still {boot.before}, or the node not Ready, {boot.timeout_s} s after the "
                               "request")),
                 _recognised(boot, recheck, cards)]
        devices = recheck.envelope.devices if recheck is not None and recheck.envelope is not None else []
    envelope = request.envelope.model_copy(update={"checks": [*request.envelope.checks, *added],
                                                   "devices": list(devices)})
    return WorkloadRun(request.workload, envelope=envelope)
