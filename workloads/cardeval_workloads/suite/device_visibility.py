"""``device-visibility``: what a pod sees of the cards it was (or was not) given (6.1.n, 8.2.14).

The isolation probe of the device-plugin check: the operator starts it in pods that
ask for 1 card, for all of them and for none, and compares what each saw with what
it asked for. It needs no privilege and reads only its own environment:

* metric ``visibility.framework_devices``: the accelerators torch sees (unavailable,
  with the reason, when no accelerator backend is usable: a CPU-only pod is not "0 cards");
* metric ``visibility.env_devices`` per visible-devices variable (label ``variable``,
  ``value``): how many IDs it lists (unavailable for ``all``);
* metric ``visibility.assigned_devices``: ``CARDEVAL_ASSIGNED_DEVICES``, when set (the
  test control plane's view of what it assigned; evidence, not counted as seen);
* metric ``visibility.device_nodes`` (detail): vendor device nodes under /dev;
* with ``--param expected=N``: check ``visibility.count_matches`` — every source that
  gives a count says N (undetermined when none does).
"""

from __future__ import annotations

from typing import Any

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param

from . import _visibility

NAME = "device-visibility"
TOPOLOGY = "node"

#: No rule reads this workload's envelope directly: the operator's device-plugin check reads the
#: visibility counts of its isolation pods and judges them as the isolation.* sub-checks of 6.1.n.
#: The operator's device-plugin check reads the counts (its isolation sub-checks of 6.1.n); the pod's
#: own verdict on them, and the device files it sees, are shown.
CHECKS: tuple[str, ...] = ()
METRICS = _visibility.COUNT_METRICS
SHOWN = ("visibility.count_matches",) + _visibility.DETAIL_METRICS
PARAMS = {
    "expected": Param(int, -1, "cards the pod asked for (-1: only observe)"),
    "resource": Param(str, "", "the extended resource the pod asked for (for the report)"),
}
PROFILES: dict[str, dict[str, Any]] = {p: {} for p in ("quick", "standard", "full")}


def run(ctx: RunContext) -> None:
    seen = _visibility.observe(ctx.accel)
    _visibility.report(ctx.out, seen)
    ctx.log.info("device-visibility: %s", seen.describe())
    expected = ctx.params["expected"]
    if expected >= 0:
        ok, detail = _visibility.count_check(seen, expected)
        ctx.out.check("visibility.count_matches", ok, detail, observed=seen.describe()[:500], expected=expected)
