"""The shared machinery every workload uses.

One idea per module:

* :mod:`.cli` — the invocation contract (arguments, exit codes, emission);
* :mod:`.stdio` — keeps stdout clean for the one envelope line;
* :mod:`.device` — the :class:`~.device.Accelerator` interface and its backends;
* :mod:`.mgmt` — management readers (NVML, vendor tools, sysfs, the host CPU);
* :mod:`.timing` — device-synchronised timing with warm-up and repeats;
* :mod:`.power` — power, energy, temperature, clock and utilisation sampling (NVML, hwmon, RAPL);
* :mod:`.builder` — collects metrics, checks, devices and errors into an envelope;
* :mod:`.registry` — workloads by name (one file each under ``suite/``);
* :mod:`.params` — typed ``--param key=value`` declarations;
* :mod:`.profiles` — profile → sizes tables;
* :mod:`.context` — what a workload's ``run(ctx)`` gets;
* :mod:`.versions` — software versions for the envelope.

Nothing here imports torch at module import time except :mod:`.device`,
:mod:`.timing` and :mod:`.context` users that need it, so argument errors are
reported fast.
"""
