"""The invocation contract the engine relies on.

``python -m cardeval_workloads <workload> [--profile quick|standard|full]
[--device auto|accelerator|cpu|cuda|rocm|npu|mlu|musa|xpu] [--devices all|0,1,...]
[--param key=value ...]``

* Logs go to stderr. Stdout carries exactly one line: the envelope
  (``ENVELOPE_MARKER`` + JSON), written last.
* The compact envelope is also written to ``$TERMINATION_MESSAGE_PATH`` if set,
  else to ``/dev/termination-log`` if it exists and is writable.
* Exit 0: an envelope was produced (even if checks failed — verdicts are the
  engine's). Exit 1: the workload (or a device's run) raised; the envelope has
  ``status="error"`` and the exception in ``errors``. Exit 2: the invocation
  was invalid (unknown workload, bad parameter, no such device index); the
  envelope has ``status="error"`` too.
* ``--device accelerator`` is ``auto`` without the host-CPU fallback. When no
  card is visible, nothing runs: the envelope has ``status="error"``, no
  devices, and an error naming what was tried; the exit is 0, since an
  envelope was produced and "this pod sees no card" is a finding about the
  node for the engine to judge, not a crash of the workload.
* SIGTERM (Kubernetes' time limit or pod deletion) ends the run with an error
  envelope that says so, keeping what was measured before it (exit 1).
* A rank other than 0 of a run started by ``mpirun`` or ``torchrun`` prints no
  envelope and writes no termination message: rank 0 reports for all ranks.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from cardeval_workloads.envelope import DEFAULT_TERMINATION_PATH, Envelope, now

from .builder import EnvelopeBuilder
from .errors import Terminated, UsageError, describe_exception
from .params import parse_params
from .profiles import PROFILES, select as select_sizes
from .stdio import CleanStdout

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Same as :data:`.device.DEVICE_CHOICES`, repeated so ``--help`` and argument errors need no torch import.
DEVICE_CHOICES = ("auto", "accelerator", "cpu", "cuda", "rocm", "npu", "mlu", "musa", "xpu")

log = logging.getLogger("cardeval")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> _Parser:
    from . import registry

    p = _Parser(prog="python -m cardeval_workloads",
                description="Run one cardeval workload and print its result envelope.",
                epilog=f"workloads: {', '.join(registry.available())}")
    p.add_argument("workload", help="workload name (e.g. info, compute)")
    p.add_argument("--profile", default="standard", choices=PROFILES)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--devices", default="all", help="'all' or comma-separated indices")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    return p


def termination_path() -> str | None:
    path = os.environ.get("TERMINATION_MESSAGE_PATH")
    if path:
        return path
    if os.path.exists(DEFAULT_TERMINATION_PATH) and os.access(DEFAULT_TERMINATION_PATH, os.W_OK):
        return DEFAULT_TERMINATION_PATH
    return None


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("received SIGTERM (time limit or pod deletion); the run was cut short")


def _fallback(workload: str, message: str) -> Envelope:
    t = now()
    return Envelope(workload=workload, status="error", started_at=t, finished_at=t, errors=[message])


def _select_or_report(devmod: Any, kind: str, out: EnvelopeBuilder) -> Any | None:
    """The backend for ``--device kind``, or None after recording that no accelerator is visible.

    Only :class:`~.device.NoAcceleratorError` is absorbed here (exit 0, status error);
    an explicitly named backend that is unusable still raises (exit 1).
    """
    try:
        return devmod.select(kind)
    except devmod.NoAcceleratorError as exc:
        log.error("%s", exc)
        out.error(str(exc))
        return None


def run(argv: list[str]) -> tuple[Envelope, int]:
    """Parse, run, and build the envelope; never raises (except BaseException from outside)."""
    raw_name = next((a for a in argv if not a.startswith("-")), "") if argv else ""
    out = EnvelopeBuilder(workload=(raw_name or "unknown")[:64])
    code = EXIT_OK
    ctx = None
    no_accelerator = False
    try:
        args = _parser().parse_args(argv)
        out.workload = args.workload[:64] or "unknown"
        out.profile = args.profile
        from . import registry

        module = registry.load(args.workload)
        params, _given = parse_params(args.param, module.PARAMS, args.workload)
        out.params = {k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in params.items()}

        from . import device as devmod  # torch is imported here, after argument checks
        from .context import RunContext

        accel = _select_or_report(devmod, args.device, out)
        no_accelerator = accel is None
        if accel is not None:
            out.backend = accel.backend
            indices = devmod.parse_devices(args.devices, accel)
            sizes = select_sizes(module.PROFILES, args.profile, accel.is_accelerator)
            ctx = RunContext(workload=args.workload, profile=args.profile, params=params, accel=accel,
                             devices=indices, out=out, sizes=sizes)
            log.info("%s: profile %s on %s devices %s", args.workload, args.profile, accel.backend, indices)
            module.run(ctx)
            if ctx.failed:
                code = EXIT_FAILED
    except UsageError as exc:
        out.error(f"invalid invocation: {exc}")
        code = EXIT_USAGE
    except SystemExit as exc:
        if ctx is None and exc.code in (0, None):
            raise  # --help: a person asked for usage, not a result
        log.error("the workload called sys.exit(%r)", exc.code)
        out.error(f"SystemExit: the workload exited with code {exc.code!r} before finishing")
        code = EXIT_FAILED
    except (Exception, Terminated, KeyboardInterrupt) as exc:  # noqa: BLE001 - reported in the envelope
        log.exception("workload failed")
        out.error(describe_exception(exc))
        code = EXIT_FAILED
    try:
        from . import versions

        out.versions = versions.collect(driver=getattr(ctx, "driver_version", None))
    except Exception as exc:  # noqa: BLE001
        log.warning("could not collect versions: %s", exc)
    try:
        envelope = out.build(status="ok" if code == EXIT_OK and not no_accelerator else "error")
    except Exception as exc:  # noqa: BLE001 - an inconsistent result is itself an error
        envelope = _fallback(out.workload, f"could not build the envelope: {describe_exception(exc)}")
        code = max(code, EXIT_FAILED)
    return envelope, code


def main(argv: list[str] | None = None) -> int:
    stdout = CleanStdout()
    logging.basicConfig(level=os.environ.get("CARDEVAL_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        envelope, code = run(sys.argv[1:] if argv is None else argv)
    finally:
        signal.signal(signal.SIGTERM, previous)
    from .distributed import reports_envelope

    if not reports_envelope():
        # A rank other than 0 started by mpirun/torchrun: it shares the launcher's stdout with
        # rank 0, which reports for the whole run (see distributed.py).
        return code
    path = termination_path()
    if path:
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(envelope.to_compact_json())
        except OSError as exc:
            log.warning("could not write the termination message to %s: %s", path, exc)
    stdout.emit(envelope.stdout_line())
    return code
