"""What an evaluation's own foreign model (``spec.foreignModel``) and the workload that deploys it agree on.

6.3.3.g deploys a model another vendor's card trained. The planner passes the
files as paths relative to the model's volume (``--param model``, ``card``,
``dataset_dir``); where that volume lies is the executor's to say, in
:data:`MODEL_DIR_ENV`: locally the ``hostPath`` itself, in a pod the volume's
mount. This module imports nothing, so the operator (which has no torch)
reads it too.
"""

#: The workload that deploys it.
WORKLOAD = "infer-cross-vendor"

#: The directory the relative paths are resolved against, as the executor gives it.
MODEL_DIR_ENV = "CARDEVAL_MODEL_DIR"
