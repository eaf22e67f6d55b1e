"""What a workload pod learns of itself from the downward API, by variable name.

The operator sets these in every workload Job (``jobs.py``); a workload that
listens on the network (the serving runtime of 6.3.1.h) binds the pod's own
address rather than every interface, and locally — where none is set —
loopback. This module imports nothing, so the operator (which has no torch)
reads it too.
"""

#: The pod's IP (``status.podIP``).
POD_IP_ENV = "CARDEVAL_POD_IP"

#: The BMC's credentials in the ``bmc`` workload's container, from the Secret ``spec.bmc.credentialsSecret``
#: names (``secretKeyRef``: the kubelet resolves it, the operator never reads the Secret).
BMC_USERNAME_ENV = "CARDEVAL_BMC_USERNAME"
BMC_PASSWORD_ENV = "CARDEVAL_BMC_PASSWORD"
