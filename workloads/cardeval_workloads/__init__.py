"""The programs that run inside evaluation pods (or as local processes).

Run one with ``python -m cardeval_workloads <workload> [--profile ...]``; it
prints exactly one result envelope (see :mod:`cardeval_workloads.envelope`) on
stdout. This package imports nothing from the engine or the operator: the
workload image carries torch and vendor libraries, the operator image does not.
Importing the package itself is cheap (no torch) so the envelope module can be
used on the engine side.
"""

__version__ = "0.1.0"
