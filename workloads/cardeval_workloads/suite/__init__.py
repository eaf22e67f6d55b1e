"""The workloads, one module each; see :mod:`cardeval_workloads.harness.registry`."""
