"""The names of the workloads this version ships, for the engine's planner.

The engine plans only these (a clause whose workload is missing is judged
NotRun with that reason).  The names come from the suite's file names, so
this import needs no torch: the operator image has none.
"""

from cardeval_workloads.harness.registry import available

WORKLOADS: frozenset[str] = frozenset(available())
