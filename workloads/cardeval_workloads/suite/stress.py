"""``stress``: sustained full load with periodic result checks (6.2.4.b, 6.3.4.b; method 8.3.4.2 / 8.4.4.2).

All the node's selected cards at once (8.3.4.2 d–e: the cards run at full
rated power for 72 h and must all stay present and working): one worker
thread per card, each preparing its load and then starting at one shared
moment with one shared deadline (:func:`run_together`), for the profile's
duration (quick: seconds; standard: 1 h; full: 72 h, the clause's 3×24 h;
``--param duration_s=…`` overrides). Each card runs flat out (:mod:`._burn`:
a matrix product repeated on fixed operands — bf16 on an accelerator, at full
power) and, every ``check_interval_s``, the latest product is compared with
the reference product (as gpu-burn does): an element farther from the
reference than two per-element error bounds is wrong. The reference itself is
checked against float64 on the CPU first. One power sampler reads all the
cards throughout, so the node's load is seen as a whole.

Watched throughout, where the card reports them (:mod:`..harness.power`):
power, energy, temperature, clocks, clock-throttle reasons, NVML XID events
and ECC error counters (before/after). An exception from the device during
the run is a *crash*: it is recorded, the load is rebuilt and the run goes on
(if rebuilding fails, the run stops there).

Checks:

* ``stress.results_correct`` — every periodic comparison matched (and the
  reference matched float64);
* ``stress.no_errors`` — no crash, no XID event, no increase of the
  uncorrected-ECC counter (the sources watched are named in the detail;
  the abnormal throttle reasons seen are listed but not judged);
* ``stress.device_present`` — after the run the card is still enumerated by
  the runtime (and NVML, where used) and computes a fresh product correctly.

Metrics: ``stress.duration_s`` (per card, the time under load, labels
``requested_s`` and ``cards_at_once``; the engine judges a run shorter than
the clause's 72 h Partial, never Pass), ``stress.crashes``,
``stress.longest_fault_free_h`` (the longest stretch without a crash, a wrong
result or an XID event), the Shanghai AI Lab stability score of seed 003 —
``stress.crash_score`` = 1/(C+1)², ``stress.fault_free_score`` = h/72 and
``stress.stability_score`` = 0.6·crash score + 0.2·fault-free score (its third
term, 0.2 × the loss-variance score of the first 100 training steps, belongs
to a training run and is not part of this one: the score's maximum here is
0.8, labelled) — and the counts, rates, power and temperature of the run.

Test hooks: ``--param inject_error=result`` corrupts one element of the
product before the second comparison (``stress.results_correct`` must
fail); ``inject_error=exception`` raises inside the load once (a crash:
``stress.no_errors`` must fail).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cardeval_workloads.harness import power
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import describe_exception
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged

from . import _burn

NAME = "stress"
TOPOLOGY = "card"

CHECKS = ("stress.no_errors", "stress.results_correct", "stress.device_present")
#: How long the run lasted decides between Pass and Partial (6.2.4.b / 6.3.4.b).
METRICS = ("stress.duration_s",)
SHOWN = ("stress.avg_power_w", "stress.comparisons", "stress.crash_score", "stress.crashes",
         "stress.device_events", "stress.energy_j", "stress.fault_free_score", "stress.longest_fault_free_h",
         "stress.max_power_w", "stress.max_temperature_c", "stress.power_fraction", "stress.rate",
         "stress.stability_score", "stress.throttled_fraction", "stress.wrong_results") + tuple(
    f"stress.{counter}_delta" for counter in power.ERROR_COUNTERS)

INJECT = ("result", "exception")
PARAMS = {
    "duration_s": Param(float, None, "seconds of load instead of the profile's (72 h = 259200)"),
    "check_interval_s": Param(float, None, "seconds between result comparisons instead of the profile's"),
    "dtype": Param(str, None, "load format (default bf16 on an accelerator, fp32 on a CPU)",
                   choices=_burn.BURN_FORMATS),
    "size": Param(int, None, "n of the n×n×n load product instead of the profile's"),
    "power_interval_s": Param(float, None, "power sampling interval instead of the profile's"),
    "inject_error": Param(str, None, "TEST HOOK: 'result' corrupts a product before the 2nd comparison; "
                          "'exception' raises inside the load once", choices=INJECT),
}

HOUR = 3600.0
PROFILES = {
    "quick": {"cpu": dict(duration_s=10.0, check_interval_s=1.0, size=384, power_interval_s=0.2),
              "accelerator": dict(duration_s=20.0, check_interval_s=2.0, size=8192, power_interval_s=0.2)},
    "standard": {"cpu": dict(duration_s=HOUR, check_interval_s=10.0, size=512, power_interval_s=1.0),
                 "accelerator": dict(duration_s=HOUR, check_interval_s=10.0, size=8192, power_interval_s=1.0)},
    "full": {"cpu": dict(duration_s=72 * HOUR, check_interval_s=60.0, size=512, power_interval_s=5.0),
             "accelerator": dict(duration_s=72 * HOUR, check_interval_s=60.0, size=8192, power_interval_s=5.0)},
}
#: Chunks of load between looks at the clock (keeps the queue short on an accelerator).
CHUNK_S = 0.25
PROGRESS_EVERY_S = 300.0


class InjectedFaultError(RuntimeError):
    """TEST HOOK: stands for a device error raised inside the load."""


def stability(crashes: int, longest_h: float) -> tuple[float, float, float]:
    """Seed 003's stability score without its training-loss term: (crash, fault-free, 0.6·c + 0.2·f)."""
    crash = 1.0 / (crashes + 1) ** 2
    fault_free = min(1.0, longest_h / 72.0)
    return crash, fault_free, 0.6 * crash + 0.2 * fault_free


def longest_gap(start: float, end: float, faults: list[float]) -> float:
    """The longest interval of [start, end] without a fault time in it (seconds)."""
    edges = [start] + sorted(t for t in faults if start <= t <= end) + [end]
    return max(b - a for a, b in itertools.pairwise(edges))


class Worker(Protocol):
    """One card's part of a run that loads all cards at once (see :func:`run_together`)."""

    index: int

    def prepare(self) -> None:
        """Set up the load (in the worker's own thread, before the shared start)."""

    def work(self, start: float, deadline: float, stop: threading.Event) -> None:
        """Load the card from ``start`` until ``deadline`` (or until ``stop`` is set)."""


class WorkerOutcome:
    """What :func:`run_together` saw of one worker."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.phase = ""          # "prepare" or "work": where ``error`` was raised
        self.started: float | None = None
        self.finished: float | None = None


def run_together(workers: Sequence[Worker], duration_s: float, begin: Callable[[], float] = time.perf_counter,
                 poll_s: float = 0.5, stop_wait_s: float = 120.0, outcomes: dict[int, WorkerOutcome] | None = None
                 ) -> tuple[float | None, float | None, dict[int, WorkerOutcome]]:
    """Run every worker in its own thread, all loading at once: ``(start, deadline, outcomes)``.

    Each thread prepares its worker; when all have (or failed to), ``begin()`` is called once — it
    marks the shared start (the caller takes a power reading of all cards there) — and every worker
    that prepared works from that start to ``start + duration_s``. A worker's exception is kept in
    its outcome, never raised, and does not hold the others up. An exception in the calling thread
    while it waits (SIGTERM's ``Terminated``) stops all workers, waits up to ``stop_wait_s`` for
    them to end and is re-raised. ``outcomes``, when given, is filled as the run goes (so a caller
    that gets the exception still sees which workers ended).

    The calling thread waits on events, not ``Thread.join``: a join interrupted by a signal
    handler's exception marks a still running thread as ended (CPython's bpo-45274 handling), and a
    second join would then return at once.
    """
    outcomes = {} if outcomes is None else outcomes
    outcomes.update({w.index: WorkerOutcome() for w in workers})
    done = {w.index: threading.Event() for w in workers}
    stop = threading.Event()
    shared: dict[str, float] = {}

    def _begin() -> None:
        shared["start"] = begin()
        shared["deadline"] = shared["start"] + duration_s

    barrier = threading.Barrier(len(workers), action=_begin) if workers else None

    def body(worker: Worker) -> None:
        out = outcomes[worker.index]
        try:
            prepared = False
            try:
                worker.prepare()
                prepared = True
            except BaseException as exc:  # noqa: BLE001 - kept for the report
                out.error, out.phase = exc, "prepare"
            try:
                assert barrier is not None
                barrier.wait()
            except threading.BrokenBarrierError:
                return
            if not prepared or stop.is_set() or "start" not in shared:
                return
            out.started = shared["start"]
            try:
                worker.work(shared["start"], shared["deadline"], stop)
            except BaseException as exc:  # noqa: BLE001 - kept for the report
                out.error, out.phase = exc, "work"
        finally:
            out.finished = time.perf_counter()
            done[worker.index].set()

    for w in workers:
        threading.Thread(target=body, args=(w,), name=f"cardeval-stress-{w.index}", daemon=True).start()
    try:
        for event in done.values():
            while not event.wait(poll_s):
                pass
    except BaseException:
        stop.set()
        if barrier is not None:
            barrier.abort()
        until = time.perf_counter() + stop_wait_s
        for event in done.values():
            event.wait(max(0.0, until - time.perf_counter()))
        raise
    return shared.get("start"), shared.get("deadline"), outcomes


@dataclass(frozen=True)
class Observed:
    """What the card's interfaces told over its run: the sampler's window and peaks, the error
    counters before and after, the device events."""

    start: float
    end: float
    counters_before: dict[str, float]
    counters_after: dict[str, float]
    counters_why: str | None
    events: list[tuple[float, str]]
    events_why: str | None
    throttle: dict[str, int]
    reads: int
    window: power.Window
    max_w: float | None
    max_t: float | None
    power_reason: str | None
    limit_w: float | None


class _Stress:
    def __init__(self, ctx: RunContext, index: int) -> None:
        self.ctx, self.index = ctx, index
        self.accel = ctx.accel
        self.where = ctx.accel.describe(index)
        p = ctx.params
        cfg = merged(ctx.sizes, p, "size", "check_interval_s", "power_interval_s")
        self.fmt = p.get("dtype") or _burn.default_format(ctx.accel)
        self.n = int(cfg["size"])
        # 0 is a duration (a run that only checks the reference), not "unset"
        self.duration = float(p["duration_s"] if p.get("duration_s") is not None else cfg["duration_s"])
        self.interval = float(cfg["check_interval_s"])
        self.power_interval = float(cfg["power_interval_s"])
        self.inject = p.get("inject_error")
        # findings
        self.crashes: list[tuple[float, str]] = []
        self.compare_faults: list[tuple[float, int]] = []
        self.comparisons = 0
        self.steps = 0
        self.loaded_s = 0.0
        self.reference_ok: bool | None = None
        self.reference_detail = ""
        self.stopped_early: str | None = None
        self.burner: Any = None
        self.sampler: power.PowerSampler | None = None
        #: The shared start (a reading of every card); this card's own start and end marks.
        self.start_mark: power.Mark | None = None
        now = power.Mark(time.perf_counter(), {})
        self.m_start = self.m_end = now
        self.cards = 1

    def _burner(self) -> _burn.Burner:
        b = _burn.Burner(self.accel, self.index, self.fmt, self.n)
        b.calibrate(min_s=min(0.2, max(0.05, self.duration / 20)))
        ok, detail = b.set_reference()
        if self.reference_ok is None or not ok:
            self.reference_ok, self.reference_detail = ok, detail
        return b

    def prepare(self) -> None:
        """In this card's worker thread: make the card current, build and check the load."""
        self.accel.set_device(self.index)
        try:
            self.burner = self._burner()
        except Exception as exc:
            self.stopped_early = f"the load could not be started: {describe_exception(exc)}"
            self.m_start = self.m_end = power.Mark(time.perf_counter(), {})
            raise

    def work(self, start: float, deadline: float, stop: threading.Event) -> None:
        """The load loop, from the shared start to the shared deadline. Findings go to ``self``; the end
        mark is set even when it is cut short."""
        assert self.sampler is not None and self.start_mark is not None
        burner = self.burner
        self.m_start = self.start_mark
        raise_at = 0.3 * self.duration if self.inject == "exception" else None
        next_check = start + self.interval
        next_progress = start + PROGRESS_EVERY_S
        try:
            while not stop.is_set():
                now = time.perf_counter()
                if now >= deadline:
                    break
                try:
                    chunk = burner.full(min(CHUNK_S, deadline - now))
                    self.steps += chunk.steps
                    self.loaded_s += chunk.wall_s
                    if raise_at is not None and time.perf_counter() - start >= raise_at:
                        raise_at = None
                        raise InjectedFaultError("inject_error test hook: a fault raised inside the load on purpose")
                    if time.perf_counter() >= next_check or time.perf_counter() >= deadline:
                        self.comparisons += 1
                        corrupt = self.inject == "result" and self.comparisons == 2
                        bad = burner.compare(corrupt=corrupt)
                        if bad:
                            self.compare_faults.append((time.perf_counter(), bad))
                            self.ctx.log.error("%s: comparison %d: %d elements differ from the reference",
                                               self.where, self.comparisons, bad)
                        next_check = time.perf_counter() + self.interval
                except Exception as exc:  # noqa: BLE001 - a device error is a crash: record, rebuild, go on
                    t = time.perf_counter()
                    self.crashes.append((t, describe_exception(exc)))
                    self.ctx.log.error("%s: crash %d at %.1f s: %s", self.where, len(self.crashes), t - start,
                                       describe_exception(exc))
                    self.release()
                    try:
                        self.accel.synchronize(self.index)
                        self.accel.empty_cache()
                        burner = self.burner = self._burner()
                    except Exception as again:  # noqa: BLE001 - the card does not come back
                        self.stopped_early = f"the load could not be rebuilt after a crash: {describe_exception(again)}"
                        self.ctx.log.error("%s: %s", self.where, self.stopped_early)
                        break
                if time.perf_counter() >= next_progress:
                    next_progress += PROGRESS_EVERY_S
                    self.ctx.log.info("%s: %.0f of %.0f s, %d comparisons, %d wrong, %d crashes", self.where,
                                      time.perf_counter() - start, self.duration, self.comparisons,
                                      len(self.compare_faults), len(self.crashes))
        finally:
            self.m_end = self.sampler.mark()
            self.release()

    def release(self) -> None:
        """Free the load's memory (once; a worker that never started still holds its load)."""
        burner, self.burner = self.burner, None
        if burner is not None:
            try:
                burner.release()
            except Exception:  # noqa: BLE001
                pass

    def finish(self, before: dict[str, float], counters_why: str | None, cards: int, ended: bool = True) -> None:
        """Report what this card's worker saw (also when the run was cut short; ``ended``: its thread
        has returned — one that has not, a card hung in a device call, keeps its load)."""
        sampler, index = self.sampler, self.index
        assert sampler is not None
        if ended:
            self.release()
        if self.m_end.t < self.m_start.t:  # still loading: the run ends for it now
            self.m_end = sampler.mark()
            if not ended:
                self.stopped_early = self.stopped_early or "the card's worker did not stop when the run was ended"
        source = sampler.sources[index]
        after, _ = source.error_counters()
        events, events_why = sampler.events_now(index)
        self.cards = cards
        throttle, reads = sampler.throttle_counts(index)
        self.report(Observed(
            start=self.m_start.t, end=self.m_end.t, counters_before=before, counters_after=after,
            counters_why=counters_why, events=events, events_why=events_why, throttle=throttle, reads=reads,
            window=sampler.window(self.m_start, self.m_end, index), max_w=sampler.max_watts(index),
            max_t=sampler.max_temperature(index), power_reason=sampler.power_reason(index),
            limit_w=source.power_limit()[0]))

    def report(self, seen: Observed) -> None:
        """This card's metrics, then its checks."""
        deltas = {k: seen.counters_after[k] - v for k, v in seen.counters_before.items() if k in seen.counters_after}
        self._report_metrics(seen, deltas)
        self._report_results_correct(seen)
        self._report_no_errors(seen, deltas)

    def _report_metrics(self, seen: Observed, deltas: dict[str, float]) -> None:
        out, index = self.ctx.out, self.index
        start, end, events, window, limit = seen.start, seen.end, seen.events, seen.window, seen.limit_w
        duration = end - start
        faults = [t for t, _ in self.crashes] + [t for t, _ in self.compare_faults] + [t for t, _ in events]
        longest_h = longest_gap(start, end, faults) / HOUR
        crash, fault_free, score = stability(len(self.crashes), longest_h)
        out.metric("stress.duration_s", duration, "s", device=index,
                   labels={"requested_s": f"{self.duration:g}", "dtype": self.fmt, "shape": f"{self.n}^3",
                           "cards_at_once": str(self.cards)})
        out.metric("stress.crashes", len(self.crashes), "count", device=index)
        out.metric("stress.longest_fault_free_h", longest_h, "h", device=index)
        out.metric("stress.crash_score", crash, "score", device=index, labels={"formula": "1/(C+1)^2"})
        out.metric("stress.fault_free_score", fault_free, "score", device=index, labels={"formula": "h/72"})
        out.metric("stress.stability_score", score, "score", device=index,
                   labels={"formula": "0.6*crash_score + 0.2*fault_free_score", "max": "0.8",
                           "excluded": "0.2*loss-variance score (training runs only)"})
        out.metric("stress.comparisons", self.comparisons, "count", device=index)
        out.metric("stress.wrong_results", len(self.compare_faults), "count", device=index)
        rate = self.steps * 2.0 * self.n**3 / self.loaded_s / 1e12 if self.loaded_s > 0 else None
        if rate is not None:
            out.metric("stress.rate", rate, "TFLOPS", device=index, labels={"dtype": self.fmt})
        if window.avg_w is not None:
            out.metric("stress.avg_power_w", window.avg_w, "W", device=index, labels={"method": window.method[:80]})
            if limit:
                out.metric("stress.power_fraction", window.avg_w / limit, "", device=index,
                           labels={"of": f"enforced limit {limit:.4g} W"})
        else:
            out.metric("stress.avg_power_w", None, "W", device=index, unavailable=seen.power_reason or window.reason)
        if window.energy_j is not None:
            out.metric("stress.energy_j", window.energy_j, "J", device=index)
        if seen.max_w is not None:
            out.metric("stress.max_power_w", seen.max_w, "W", device=index)
        if seen.max_t is not None:
            out.metric("stress.max_temperature_c", seen.max_t, "C", device=index)
        if seen.reads and seen.throttle:
            for reason, count in sorted(seen.throttle.items()):
                out.metric("stress.throttled_fraction", count / seen.reads, "", device=index,
                           labels={"reason": reason, "detail": "true"})
        for k, v in deltas.items():
            out.metric(f"stress.{k}_delta", v, "count", device=index)
        if seen.events_why is None:
            out.metric("stress.device_events", len(events), "count", device=index)
        else:
            out.metric("stress.device_events", None, "count", device=index, unavailable=seen.events_why[:500])

    def _report_results_correct(self, seen: Observed) -> None:
        """``stress.results_correct``: every periodic comparison with the reference matched."""
        out, index, start = self.ctx.out, self.index, seen.start
        duration = seen.end - start
        checks = f"{self.comparisons} comparisons of the latest product with the reference every " \
                 f"{self.interval:g} s over {duration:.4g} s ({self.cards} card(s) loaded at once)"
        wrong = ", ".join(f"{n} elements at {t - start:.1f} s" for t, n in self.compare_faults[:10])
        if self.comparisons == 0:
            out.check("stress.results_correct", None, f"no comparison was made ({duration:.3g} s run)",
                      device=index)
        else:
            ok = not self.compare_faults and bool(self.reference_ok)
            hook = " [inject_error=result test hook]" if self.inject == "result" else ""
            out.check("stress.results_correct", ok,
                      (f"{checks}: " + (f"{len(self.compare_faults)} wrong ({wrong})" if self.compare_faults
                                        else "all matched") + f"; {self.reference_detail}{hook}")[:1024],
                      observed=len(self.compare_faults), expected=0, device=index)

    def _report_no_errors(self, seen: Observed, deltas: dict[str, float]) -> None:
        """``stress.no_errors``: no crash, device event or uncorrected ECC error, saying what was watched."""
        out, index, events, events_why = self.ctx.out, self.index, seen.events, seen.events_why
        duration = seen.end - seen.start
        problems, watched, unwatched = [], ["exceptions from the device"], []
        if self.crashes:
            problems.append(f"{len(self.crashes)} crash(es): " + "; ".join(m for _, m in self.crashes[:3]))
        if self.stopped_early:
            problems.append(self.stopped_early)
        if events_why is None:
            watched.append("XID events")
            if events:
                problems.append(f"{len(events)} device event(s): " + ", ".join(e for _, e in events[:10]))
        else:
            unwatched.append(f"device events ({events_why})")
        if "ecc_uncorrected" in deltas:
            watched.append("uncorrected ECC counter")
            if deltas["ecc_uncorrected"] > 0:
                problems.append(f"uncorrected ECC errors rose by {deltas['ecc_uncorrected']:g}")
        else:
            unwatched.append(f"ECC counters ({seen.counters_why})")
        abnormal = {k: v for k, v in seen.throttle.items() if k in power.ABNORMAL_THROTTLE}
        note = f"; abnormal clock throttling seen: {abnormal} of {seen.reads} reads" if abnormal else ""
        detail = (("; ".join(problems) if problems else f"none in {duration:.4g} s")
                  + f"; watched: {', '.join(watched)}" + (f"; not watchable: {'; '.join(unwatched)}" if unwatched
                                                          else "") + note)
        hook = " [inject_error=exception test hook]" if self.inject == "exception" else ""
        out.check("stress.no_errors", not problems, (detail + hook)[:1024], observed=len(problems), expected=0,
                  device=index)

    def present(self) -> None:
        """After the run: still enumerated, and still computing correctly."""
        out, index = self.ctx.out, self.index
        problems, seen = [], []
        try:
            count = self.accel.count()
            seen.append(f"the runtime lists {count} device(s)")
            if index >= count:
                problems.append(f"device {index} is no longer listed")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"enumeration failed: {describe_exception(exc)}")
        if self.accel.backend == "cuda":
            nvml = power.NvmlSource(self.accel, index)
            try:
                if nvml.handle is None and nvml.nvml is not None:
                    problems.append(f"NVML no longer finds the card: {nvml.power_reason}")
                elif nvml.handle is not None:
                    seen.append("NVML finds the card")
            finally:
                nvml.close()
        if not problems:
            try:
                ok, detail = _burn.healthy(self.accel, index)
                seen.append(detail)
                if not ok:
                    problems.append("the fresh product is wrong")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"a fresh product failed: {describe_exception(exc)}")
        what = "card" if self.accel.is_accelerator else "host CPU (the device under test)"
        out.check("stress.device_present", not problems,
                  (f"after the run the {what}: " + "; ".join(problems + seen))[:1024],
                  observed=not problems, expected=True, device=index)


def run(ctx: RunContext) -> None:
    if ctx.params.get("duration_s") is not None and ctx.params["duration_s"] < 0:
        from cardeval_workloads.harness.errors import UsageError

        raise UsageError("duration_s must not be negative")
    workers = [_Stress(ctx, index) for index in ctx.devices]
    if not workers:
        return
    for w in workers:
        ctx.out.device(ctx.identity(w.index))
    duration, where = workers[0].duration, ", ".join(w.where for w in workers)
    ctx.log.info("stress: %d card(s) at once (%s) for %.0f s", len(workers), where, duration)
    outcomes: dict[int, WorkerOutcome] = {}
    with power.sampling(ctx, [w.index for w in workers], workers[0].power_interval, watch_events=True) as sampler:
        counters = {}
        for w in workers:
            w.sampler = sampler
            counters[w.index] = sampler.sources[w.index].error_counters()

        def begin() -> float:
            mark = sampler.mark()
            for w in workers:
                w.start_mark = mark
            return mark.t

        try:
            run_together(workers, duration, begin=begin, outcomes=outcomes)
        finally:
            # report what was seen even when the run is cut short (SIGTERM at hour 50 of 72)
            for w in workers:
                before, why = counters[w.index]
                ended = outcomes.get(w.index) is None or outcomes[w.index].finished is not None
                try:
                    w.finish(before, why, len(workers), ended)
                except Exception as exc:  # noqa: BLE001 - one card's report must not lose the others'
                    ctx.failed = True
                    ctx.log.exception("stress: reporting %s failed", w.where)
                    ctx.out.error(f"device {w.index} ({w.where}): the report failed: {describe_exception(exc)}")
    for w in workers:
        failure = outcomes.get(w.index)
        if failure is not None and failure.error is not None:
            ctx.failed = True
            ctx.log.error("stress failed on %s (%s): %s", w.where, failure.phase, describe_exception(failure.error))
            ctx.out.error(f"device {w.index} ({w.where}): {describe_exception(failure.error)}")
        w.present()
        try:
            ctx.accel.empty_cache()
        except Exception:  # noqa: BLE001
            pass
