"""Builders of result envelopes for judge tests (the judge's input, not a workload's output)."""

from datetime import datetime, timedelta, timezone

from cardeval_workloads.envelope import Check, DeviceIdentity, Envelope, InfoField, Metric

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def envelope(workload, checks=(), metrics=(), devices=None, seconds=10.0, status="ok", errors=()):
    devices = devices if devices is not None else [gpu(0)]
    checks = list(checks)
    if workload == "info" and not any(c.name == "info.ecc_counters_readable" for c in checks):
        # info reports whether each card's ECC counters could be read (8.3.4.3: ECC working)
        checks += [check("info.ecc_counters_readable", d.is_accelerator or None, device=d.index) for d in devices]
    return Envelope(workload=workload, startedAt=T0, finishedAt=T0 + timedelta(seconds=seconds),
                    backend="cuda", status=status, errors=list(errors), devices=devices,
                    checks=checks, metrics=list(metrics))


def gpu(index, **fields):
    base = {"vendor": "NVIDIA", "model": "H100", "serial": f"SN{index}", "firmware": "96.00",
            "memory_total_bytes": str(80 * 2**30), "pcie_gen_max": "5", "ecc_mode": "enabled",
            "memory_type": "HBM3", "form_factor": "pcie", "ecc_errors_corrected": "0", "ecc_errors_uncorrected": "0"}
    base.update(fields)
    return DeviceIdentity(index=index, backend="cuda", name="H100", is_accelerator=True,
                          fields={k: (InfoField(value=v, source="nvml") if v is not None
                                      else InfoField(unavailable="not supported by this device"))
                                  for k, v in base.items()})


def cpu():
    return DeviceIdentity(index=0, backend="cpu", name="host CPU", is_accelerator=False,
                          fields={"vendor": InfoField(value="GenuineIntel", source="cpuinfo")})


def check(name, ok, device=0, detail=""):
    return Check(name=name, ok=ok, device=device, detail=detail)


def metric(name, value, unit="", device=0, unavailable=None, **labels):
    return Metric(name=name, value=value, unit=unit, device=device, unavailable=unavailable, labels=labels)
