"""The catalog's rules and the workloads agree on the names of checks and metrics.

A rule that reads a name no workload emits would judge every run an Error ("did not report");
a name a workload emits that nothing reads is either shown beside a verdict (the workload says
so in ``SHOWN``) or dead.  Each workload module declares what it emits (``CHECKS``, ``METRICS``,
``SHOWN``; see ``cardeval_workloads.harness.registry``); the rules say what they read
(``Rule.reads``), and so does the one reader that is not a rule: the operator's device-plugin
check of 6.1.n, which decides its sub-checks from the isolation pods' and the probe's results
(``cardeval.engine.device_plugin_checks``), the executors' ``resume.fault_reported`` of the resume
test (``cardeval.engine.fault_report``), and the operator's observations of a restart through the BMC,
added to the ``bmc-restart`` request's result (``cardeval.engine.restart_check``, which reads the request's
check).  Both directions are held here, for every workload this version ships.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from cardeval.engine import device_plugin_checks as device_plugin
from cardeval.engine.catalog import (
    CLAUSES, DEVICE_PLUGIN_CHECKS, DEVICE_PLUGIN_INFORMATIONAL, DEVICE_PLUGIN_METRICS, Clause,
)
from cardeval.engine.rules import Read
from cardeval_workloads import restart_protocol, resume_protocol
from cardeval_workloads.available import WORKLOADS
from cardeval_workloads.harness.registry import load

#: The 6.1.n names the device-plugin check decides itself, from the Node object and the pods (the
#: rest are the probe's, forwarded).
DECIDED_BY_THE_CHECK = (frozenset(DEVICE_PLUGIN_CHECKS + DEVICE_PLUGIN_INFORMATIONAL + DEVICE_PLUGIN_METRICS)
                        - set(device_plugin.PROBE_CHECKS) - set(device_plugin.PROBE_COUNTS))


OBSERVED_AFTER_A_RESTART = frozenset({restart_protocol.NEW_BOOT, restart_protocol.CARDS_RECOGNISED})


def _workload_of(clause: Clause, read: Read) -> str:
    """The suite workload whose result the read names: a run variant (``train-parallel.cluster``)
    is its workload's run."""
    run = read.workload or clause.workloads[0]
    return run.split(".", 1)[0]


def _read() -> dict[str, dict[str, set[str]]]:
    """workload → kind → the names something reads of that workload's result."""
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"check": set(), "metric": set()})
    for clause in CLAUSES:
        for read in clause.rule.reads():
            workload = _workload_of(clause, read)
            if read.kind == "field" or (workload == device_plugin.WORKLOAD and read.name in DECIDED_BY_THE_CHECK):
                continue
            if workload == resume_protocol.WORKLOAD and read.name == resume_protocol.FAULT_REPORTED:
                continue  # the executor's observation, added to the run's result (engine.fault_report)
            if workload == restart_protocol.WORKLOAD and read.name in OBSERVED_AFTER_A_RESTART:
                continue  # the operator's observations, added to the request's result (engine.restart_check)
            out[workload][read.kind].add(read.name)
    out["device-visibility"]["metric"] |= set(device_plugin.VISIBILITY_COUNTS)
    out[restart_protocol.WORKLOAD]["check"].add(restart_protocol.REQUESTED)
    out[device_plugin.WORKLOAD]["metric"] |= set(device_plugin.PROBE_COUNTS)
    return out


READ = _read()


def _declared(workload: str) -> dict[str, set[str]]:
    module = load(workload)
    return {"check": set(module.CHECKS), "metric": set(module.METRICS), "shown": set(module.SHOWN)}


def test_a_rule_names_only_workloads_its_clause_names():
    """A rule's explicit workload is one its clause names (else no run of it is planned)."""
    stray = [(c.id, r.workload) for c in CLAUSES for r in c.rule.reads()
             if r.workload is not None and r.workload not in c.workloads]
    assert stray == []


@pytest.mark.parametrize("workload", sorted(w for w in READ if w in WORKLOADS))
def test_every_name_read_is_declared_by_its_workload(workload):
    declared = _declared(workload)
    for kind in ("check", "metric"):
        missing = READ[workload][kind] - declared[kind]
        assert not missing, f"{workload}: {kind}s are read that it does not declare: {sorted(missing)}"


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_every_declared_name_is_read_or_said_to_be_shown_only(workload):
    declared = _declared(workload)
    read = READ.get(workload, {"check": set(), "metric": set()})
    for kind in ("check", "metric"):
        unread = declared[kind] - read[kind]
        assert not unread, (f"{workload} declares {kind}s nothing reads: {sorted(unread)} "
                            "(a name shown only beside a verdict belongs in SHOWN)")
    judged_anyway = declared["shown"] & (read["check"] | read["metric"])
    assert not judged_anyway, f"{workload}: names declared SHOWN are read: {sorted(judged_anyway)}"


def test_the_probe_declares_every_check_the_device_plugin_check_forwards():
    declared = _declared(device_plugin.WORKLOAD)
    assert set(device_plugin.PROBE_CHECKS) <= declared["check"] | declared["shown"]


def test_a_misspelt_name_in_a_rule_is_caught():
    """The matching above is not vacuous: a rule reading a name the workload lacks is found."""
    from cardeval.engine.rules import ChecksAll

    rule = ChecksAll(("transfer.h2d_corect",))
    declared = _declared("transfer")
    assert {r.name for r in rule.reads()} - declared["check"] == {"transfer.h2d_corect"}
