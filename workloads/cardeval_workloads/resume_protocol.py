"""What the resumable training run (``train-resume``) and the executor restarting it agree on.

Checkpoint resume (6.2.4.a, 8.3.4.1) is tested with faults that end the
process: the run kills itself at a random step, and later asks to be stopped
from outside (on a cluster: its pod deleted). Whoever runs it — ``cardeval
run``'s local executor or the operator — restarts it, says what it saw, and
gives it a directory that outlives the process. The names here are that
contract; this module imports nothing, so the operator (which has no torch)
reads it too.
"""

#: The workload that is restarted after its faults.
WORKLOAD = "train-resume"

#: The faults it can be put through, in the order they are injected: ``kill`` — the process
#: kills itself (SIGKILL) at a random step after its first checkpoint, so its container is
#: restarted; ``delete`` — after resuming, it waits for its executor to stop it from outside
#: (its pod deleted and replaced by the Job controller; locally the process terminated and
#: started again), which needs a checkpoint directory that outlives the pod.
FAULTS = ("kill", "delete")

#: The directory the executor gives it for checkpoints (an emptyDir, a volume, a local temporary directory).
CHECKPOINT_DIR_ENV = "CARDEVAL_CHECKPOINT_DIR"

#: A name unique to one run (the Job's uid), appended to the directory: a volume reused by a
#: later evaluation never hands a new run an old run's checkpoint.
RUN_ID_ENV = "CARDEVAL_RUN_ID"

#: The log line that asks the executor to inject the ``delete`` fault now (its pod deleted).
AWAITING_DELETION = "cardeval-fault: awaiting deletion of this pod"

#: The check the executor adds to the run's result: it observed each fault and reported it.
FAULT_REPORTED = "resume.fault_reported"

#: The metric the run reports once per fault it went through (labels ``kind``, ``attempt``, ``step``).
FAULT_METRIC = "resume.fault"
