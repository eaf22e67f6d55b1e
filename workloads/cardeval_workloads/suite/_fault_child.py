"""The child processes of the ``fault`` workload (not a workload: the name starts with ``_``).

``python -m cardeval_workloads.suite._fault_child provoke|recover --backend B --index I [--swallow]
[--corrupt]`` prints one line, ``MARKER`` + JSON, and exits (``os._exit``: after a device fault the
runtime's own teardown may hang or abort, and what had to be said has been said).

* ``provoke``: index a one-element tensor on the device at position 10 with an index tensor that
  lives on the device too, so the bounds check runs inside the device's indexing kernel (on CUDA a
  device-side assert; on the host CPU the framework's bounds check). Reports the exception the
  application received — type, message, and the runtime's error code where it gives one
  (``torch.AcceleratorError.error_code``: 710 = cudaErrorAssert) — or, if none came, the value
  it computed. ``--swallow`` (test hook) discards the error and returns a made-up value, as a
  stack that hides faults would.
* ``recover``: a fresh process computes a 64×128×32 fp32 product on the same device and compares
  it with a float64 host product (the bound of :mod:`._gemm`). ``--corrupt`` (test hook) corrupts
  one element first. With ``--wait`` it loads its libraries (no device call: torch initialises a
  device runtime on first use) and waits for a line on stdin, so the parent can start it while the
  fault runs and release it afterwards; its device work all happens after the fault.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

MARKER = "::cardeval-fault::"
EXIT_RAISED = 3


def _emit(payload: dict, code: int) -> None:
    sys.stdout.write(MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def provoke(accel, index: int, swallow: bool) -> None:
    import torch

    device = accel.device(index)
    x = torch.zeros(1, device=device)
    idx = torch.tensor([10], device=device)
    started = time.perf_counter()
    try:
        y = x[idx]
        accel.synchronize(index)
        result = y.to("cpu").tolist()
    except Exception as exc:  # noqa: BLE001 - the error is what this process exists to report
        if not swallow:
            code = getattr(exc, "error_code", None)
            _emit({"raised": True, "type": type(exc).__name__, "message": str(exc).strip()[:1500],
                   "code": int(code) if isinstance(code, int) else None,
                   "seconds": time.perf_counter() - started}, EXIT_RAISED)
        result = [0.0]  # TEST HOOK: the error is discarded and a made-up value returned
    _emit({"raised": False, "result": result, "seconds": time.perf_counter() - started}, 0)


def recover(accel, index: int, corrupt: bool, started: float) -> None:
    import torch

    from cardeval_workloads.suite import _gemm

    device = accel.device(index)
    gen = torch.Generator(device="cpu").manual_seed(20240856)
    case = _gemm.make_case("fp32", 64, 128, 32, device, generator=gen)
    result = case.run()
    accel.synchronize(index)
    if corrupt:
        result = _gemm.inject_fault(result)
    v = _gemm.verify(case, result)
    _emit({"ok": bool(v.ok), "ratio": v.ratio if v.ratio != float("inf") else None,
           "max_abs_err": v.max_abs_err if v.max_abs_err != float("inf") else None,
           "nonfinite": v.nonfinite, "count": accel.count(), "name": accel.name(index),
           "seconds": time.perf_counter() - started}, 0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="cardeval fault child")
    p.add_argument("action", choices=("provoke", "recover"))
    p.add_argument("--backend", required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--swallow", action="store_true")
    p.add_argument("--corrupt", action="store_true")
    p.add_argument("--wait", action="store_true", help="load the libraries, then wait for a line on stdin "
                   "before touching the device")
    args = p.parse_args(argv)
    import torch  # noqa: F401 - loading the libraries touches no device

    from cardeval_workloads.harness import device as devmod
    from cardeval_workloads.suite import _gemm  # noqa: F401

    if args.wait:
        sys.stdin.readline()
    started = time.perf_counter()
    accel = devmod.select(args.backend)
    accel.set_device(args.index)
    if args.action == "provoke":
        provoke(accel, args.index, args.swallow)
    else:
        recover(accel, args.index, args.corrupt, started)


if __name__ == "__main__":
    main()
