"""What the BMC restart of step g (8.3.4.2 g / 8.4.4.2 g) and the operator driving it agree on.

"Verify that after the system restarts the cards are recognised normally." The
restart itself is one request to the node's BMC — the ``bmc-restart`` workload,
run in a Job on *another* node, since the node restarted cannot report on its own
restart — and the rest is the operator's (``cardeval.operator.restart_runner``):
cordon and drain the node first, wait for its new boot (the Node's ``bootID``
changes and it is Ready again), run the re-check on its cards, uncordon. The
operator adds its observations to the run's result (``cardeval.engine.restart_check``).
This module imports nothing, so the operator (which has no torch) reads it too.
"""

#: The workload that sends the restart request.
WORKLOAD = "bmc-restart"

#: The workload's own check: the BMC accepted the ``ComputerSystem.Reset`` request.
REQUESTED = "restart.requested"
#: The operator's: the node came back with a new boot ID, Ready, within the time allowed.
NEW_BOOT = "restart.new_boot"
#: The operator's, from the re-check: every card given to the pod is enumerated and computes correctly.
CARDS_RECOGNISED = "restart.cards_recognised"

#: The re-check after the new boot: a short run of the stress workload on all the node's cards, whose
#: ``stress.device_present`` says each card is enumerated and computes a fresh product correctly.
RECHECK_WORKLOAD = "stress"
RECHECK_PARAMS = (("duration_s", "10"),)
RECHECK_CHECKS = ("stress.device_present", "stress.results_correct", "stress.no_errors")
