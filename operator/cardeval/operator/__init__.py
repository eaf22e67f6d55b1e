"""The Kubernetes operator: a thin kopf adapter over the engine.

The engine (``cardeval.engine``) plans, collects and judges; this package only
executes work items as Jobs, reads what they left behind through the API, and
writes results back (per-node ConfigMaps, the evaluation's status, Events,
metrics).  The local runner and the operator share plan, collect and judge and
differ only in the executor.

Module map (one idea each; the import-linter contract "Operator layers" keeps the order):

* ``handlers``        the kopf wiring (watches → work queue; startup, cleanup, login)
* ``reconcile``       one level-based pass over one evaluation
* ``runners``         who runs a kind of work item (Jobs by default), chosen once per item
* ``deviceplugin``    the runner of the device-plugin check of 6.1.n: its pods through the API
                      (``engine.device_plugin_checks`` decides the sub-checks)
* ``multinode_runner`` the runs across nodes, stepped by each pass (start, collect, give up)
* ``evaluation_pass`` what one pass works with (its scope, the observed state)
* ``collect_k8s``     a finished Job's or run's pod → ``WorkloadRun`` through ``engine.collect``
* ``admission``       ``spec.admission.onPass``: untaint/label compliant nodes
* ``events``          Kubernetes Events (idempotent names, so restarts do not repeat them)
* ``nodes``           Node objects → ``NodeFacts``; which nodes match
* ``multinode_launch`` what a run across nodes is launched as: MPIJob, or Indexed Job and Service
* ``results``         the per-node ConfigMap: stored runs and the judged ``NodeResult``
* ``scheduler``       which work item starts next (per-node queues, nodes in parallel)
                      and the reconcile work queue
* ``jobs``            Job manifests and reading a Job's (or MPIJob's) state
* ``pods``            the one workload pod, and reading its finished container
* ``kube``            a small JSON client over the official ``kubernetes`` transport
* ``labels``          labels, annotations and owner references of child objects
* ``config``          settings from the environment (the chart sets them)
* ``metrics``         the Prometheus endpoint
* ``__main__``        ``python -m cardeval.operator``
"""
