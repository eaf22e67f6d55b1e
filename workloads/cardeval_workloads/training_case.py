"""What an evaluation's training case (``spec.trainingCase``) and the workloads that train it agree on.

The planner passes ``--param dataset=<name>`` to :data:`WORKLOADS`; where the
data lies is the executor's to say, in :data:`DATASET_DIR_ENV`: locally the
``hostPath`` itself, in a pod the mount of the volume. This module imports
nothing, so the operator (which has no torch) reads it too.
"""

#: The workloads that train the case the spec names; the others train the built-in digits case
#: (their details say so).
WORKLOADS = ("train",)

#: The directory holding the dataset in its published format, as the executor gives it.
DATASET_DIR_ENV = "CARDEVAL_DATASET_DIR"
