"""The child processes of the ``fault`` workload (not a workload: the name starts with ``_``).

``python -m cardeval_workloads.suite._fault_child provoke|recover --backend B --index I [--mode M]
[--swallow] [--corrupt]`` prints one line, ``MARKER`` + JSON, and exits (``os._exit``: after a device
fault the runtime's own teardown may hang or abort, and what had to be said has been said).

* ``provoke``: a fault on the device, of one of two kinds (``--mode``):

  - ``illegal-address`` (NVIDIA CUDA): a real memory fault. A 64 MiB block is allocated on the card,
    a second tensor is made over the same address through ``__cuda_array_interface__`` (so it does
    not own the memory), the block is freed and returned to the driver (``empty_cache``; the fall of
    ``memory_reserved`` proves it was unmapped), and then the card writes through the stale tensor.
    The card's MMU faults; the CUDA runtime reports ``cudaErrorIllegalAddress`` (700) and the
    driver raises Xid 31. Should the block not be released (the allocator kept it), the child says
    so and falls back to ``index``.
  - ``index`` (any backend): index a one-element tensor on the device at position 10 with an index
    tensor that lives on the device too, so the bounds check runs inside the device's indexing
    kernel (on CUDA/ROCm a device-side assert, ``cudaErrorAssert`` 710; on the host CPU the
    framework's bounds check, an argument check that involves no device).

  Reports the exception the application received — type, message, and the runtime's error code:
  ``torch.AcceleratorError.error_code``, or where torch gives none on CUDA, the sticky error of the
  context as the driver API returns it (``cuCtxSynchronize``) — or, if none came, the value it
  computed. ``--swallow`` (test hook) discards the error and returns a made-up value, as a stack
  that hides faults would.
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


#: Bytes of the block the ``illegal-address`` fault writes to after it was freed.
STALE_BYTES = 64 << 20


def _cuda_driver_error() -> tuple[int | None, str | None]:
    """The CUDA context's sticky error through the driver API (``cuCtxSynchronize``), and its name."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None, None
    try:
        rc = int(lib.cuCtxSynchronize())
        name = ctypes.c_char_p()
        lib.cuGetErrorName(rc, ctypes.byref(name))
        return rc, (name.value or b"").decode(errors="replace") or None
    except Exception:  # noqa: BLE001 - a missing symbol: no code from the driver
        return None, None


def _stale_tensor(index: int):
    """A tensor over device memory that has been freed and returned to the driver, or (None, why)."""
    import torch

    device = torch.device("cuda", index)
    torch.zeros(1, device=device)  # the context exists before anything is measured
    n = STALE_BYTES // 4
    block = torch.empty(n, dtype=torch.float32, device=device)
    ptr = int(block.data_ptr())

    class _Interface:  # numba's protocol: torch wraps the address without owning it
        __cuda_array_interface__ = {"shape": (n,), "typestr": "<f4", "data": (ptr, False), "version": 2}

    stale = torch.as_tensor(_Interface(), device=device)
    if int(stale.data_ptr()) != ptr:
        return None, "torch copied the interface's memory instead of wrapping its address"
    torch.cuda.synchronize(index)
    reserved = torch.cuda.memory_reserved(index)
    del block
    torch.cuda.synchronize(index)
    torch.cuda.empty_cache()
    released = reserved - torch.cuda.memory_reserved(index)
    if released < STALE_BYTES:
        return None, (f"the allocator kept the freed block (memory_reserved fell by {released} bytes, not "
                      f"{STALE_BYTES}), so its address is still mapped")
    return stale, f"wrote to a {STALE_BYTES >> 20} MiB block after it was freed and unmapped"


def provoke(accel, index: int, swallow: bool, mode: str) -> None:
    import torch

    device = accel.device(index)
    note = ""
    stale = None
    if mode == "illegal-address":
        try:
            stale, note = _stale_tensor(index)
        except Exception as exc:  # noqa: BLE001 - the set-up itself failed: say so, use the other fault
            stale, note = None, f"the illegal-address set-up failed ({type(exc).__name__}: {exc})"
        if stale is None:
            note += "; fell back to an out-of-bounds index"
            mode = "index"
    if mode == "index":
        x = torch.zeros(1, device=device)
        idx = torch.tensor([10], device=device)
    started = time.perf_counter()
    try:
        if stale is not None:
            stale.fill_(1.0)
            accel.synchronize(index)
            result = [float(stale[0].item())]
        else:
            y = x[idx]
            accel.synchronize(index)
            result = y.to("cpu").tolist()
    except Exception as exc:  # noqa: BLE001 - the error is what this process exists to report
        if not swallow:
            elapsed = time.perf_counter() - started
            code = getattr(exc, "error_code", None)
            code = int(code) if isinstance(code, int) else None
            source = "torch error_code" if code is not None else None
            driver_code, driver_name = (None, None)
            if accel.backend == "cuda":
                driver_code, driver_name = _cuda_driver_error()
                if code is None and driver_code not in (None, 0):
                    code, source = driver_code, "cuCtxSynchronize"
            _emit({"raised": True, "type": type(exc).__name__, "message": str(exc).strip()[:1500],
                   "code": code, "code_source": source, "driver_code": driver_code, "driver_name": driver_name,
                   "mode": mode, "note": note, "seconds": elapsed}, EXIT_RAISED)
        result = [0.0]  # TEST HOOK: the error is discarded and a made-up value returned
    _emit({"raised": False, "result": result, "mode": mode, "note": note,
           "seconds": time.perf_counter() - started}, 0)


def recover(accel, index: int, corrupt: bool, started: float) -> None:
    import torch

    from cardeval_workloads.harness.testhook import corrupt_one
    from cardeval_workloads.suite import _gemm

    device = accel.device(index)
    gen = torch.Generator(device="cpu").manual_seed(20240856)
    case = _gemm.make_case("fp32", 64, 128, 32, device, generator=gen)
    result = case.run()
    accel.synchronize(index)
    if corrupt:
        result = corrupt_one(result.clone())
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
    p.add_argument("--mode", choices=("index", "illegal-address"), default="index")
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
        provoke(accel, args.index, args.swallow, args.mode)
    else:
        recover(accel, args.index, args.corrupt, started)


if __name__ == "__main__":
    main()
