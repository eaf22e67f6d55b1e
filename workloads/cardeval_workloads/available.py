"""The names of the workloads this version ships.

The engine plans only these (a clause whose workload is missing is judged
NotRun with that reason), so this module must stay importable without torch:
the operator image has none.  A test checks that it equals the harness's
registry.
"""

WORKLOADS: frozenset[str] = frozenset({"info", "compute"})
