"""The Kubernetes operator: a thin kopf adapter over the engine.

The engine (``cardeval.engine``) plans, collects and judges; this package only
executes work items as Jobs, reads what they left behind through the API, and
writes results back (per-node ConfigMaps, the evaluation's status, Events,
metrics).  The local runner and the operator share plan, collect and judge and
differ only in the executor.

Module map (one idea each):

* ``config``      settings from the environment (the chart sets them)
* ``kube``        a small JSON client over the official ``kubernetes`` transport
* ``labels``      labels, annotations and owner references of child objects
* ``jobs``        Job manifests and reading a Job's state
* ``scheduler``   which work item starts next (per-node queues, nodes in parallel)
                  and the reconcile work queue
* ``collect_k8s`` a finished Job's pod → ``WorkloadRun`` through ``engine.collect``
* ``results``     the per-node ConfigMap: stored runs and the judged ``NodeResult``
* ``nodes``       Node objects → ``NodeFacts``; which nodes match
* ``reconcile``   one level-based pass over one evaluation
* ``events``      Kubernetes Events (idempotent names, so restarts do not repeat them)
* ``metrics``     the Prometheus endpoint
* ``admission``   ``spec.admission.onPass``: untaint/label compliant nodes
* ``handlers``    the kopf wiring (watches → work queue; startup, cleanup, login)
* ``__main__``    ``python -m cardeval.operator``
"""
