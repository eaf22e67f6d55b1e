"""The names of the workloads this version ships, for the engine's planner.

The engine plans only these (a clause whose workload is missing is judged
NotRun with that reason).  The names come from the suite's file names, so
this import needs no torch: the operator image has none.
"""

from cardeval_workloads.harness.registry import available

WORKLOADS: frozenset[str] = frozenset(available())

#: Workloads the operator runs in pods of its own for a check it drives from the API (the
#: device-plugin check of 6.1.n: a privileged probe pod and isolation pods), never as a
#: planned Job; a local run has no cluster to run them in. The planner plans their clause's
#: item only for an executor that says it runs them (``plan(..., operator_checks=...)``).
OPERATOR_WORKLOADS: frozenset[str] = frozenset({"device-plugin", "device-visibility"}) & WORKLOADS

#: Workloads that need access only the executor holds — the BMC's endpoint and credentials — planned
#: only for an executor that says it has it (``plan(..., operator_checks=...)``), judged NotRun otherwise.
CONFIGURED_WORKLOADS: frozenset[str] = frozenset({"bmc", "bmc-restart"}) & WORKLOADS
