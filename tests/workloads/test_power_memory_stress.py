"""Power sampling and the memory, transfer, power-load, power-limit and stress workloads.

Real runs on the CPU (no mocks of torch): the workloads' envelopes are valid,
each check can fail through a documented test hook that corrupts data on the
real code path, and what this machine cannot measure (power without RAPL, a
host↔card link on a CPU) is reported undetermined with the reason.

Where a check needs power that this machine does not expose, the power
source reads a RAPL-shaped sysfs tree that the test writes (an energy counter
advancing at a chosen wattage, a package limit): the workload, the sampler
and the source's file parsing are the real ones, only the files are the
test's.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cardeval_workloads.envelope import TERMINATION_MESSAGE_LIMIT, find_envelope_in_output, parse_envelope
from cardeval_workloads.harness import cli, power
from cardeval_workloads.harness.builder import EnvelopeBuilder
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.device import CpuBackend

ROOT = Path(__file__).resolve().parents[2]


MACHINE_HAS_POWER = power.HostSource().power_reason is None


def run_cli(*args: str, tmp_path: Path, timeout: float = 120):
    env = dict(os.environ, TERMINATION_MESSAGE_PATH=str(tmp_path / "termination-log"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "workloads"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", "cardeval_workloads", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    envelope = find_envelope_in_output(proc.stdout)
    message = (tmp_path / "termination-log").read_text()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    compact = parse_envelope(message)
    assert compact.compact and compact.workload == envelope.workload and compact.status == envelope.status
    assert len(proc.stdout.splitlines()) == 1, proc.stdout[:300]
    return proc, envelope, compact


def run_inprocess(*args: str):
    """The CLI's own run (argument parsing, profile, workload, envelope) without a new interpreter."""
    envelope, code = cli.run(list(args))
    compact = parse_envelope(envelope.to_compact_json())
    assert len(envelope.to_compact_json().encode()) <= TERMINATION_MESSAGE_LIMIT
    assert compact.workload == envelope.workload and compact.status == envelope.status
    return envelope, code


def check(env, name: str):
    found = env.checks_named(name)
    assert len(found) == 1, (name, [c.name for c in env.checks])
    return found[0]


# --- a RAPL-shaped sysfs tree written by the test ---------------------------------------------------


class FakeRapl:
    """``intel-rapl:0`` with an energy counter that advances at ``watts`` (wrapping like the real one)."""

    def __init__(self, root: Path, watts: float, limit_w: float | None = None, wrap_uj: int = 2**32) -> None:
        self.root, self.watts, self.wrap = root, watts, wrap_uj
        self.zone = root / "intel-rapl:0"
        self.zone.mkdir(parents=True)
        (self.zone / "name").write_text("package-0\n")
        (self.zone / "max_energy_range_uj").write_text(f"{wrap_uj}\n")
        (self.zone / "enabled").write_text("1\n")
        if limit_w is not None:
            (self.zone / "constraint_0_name").write_text("long_term\n")
            (self.zone / "constraint_0_power_limit_uw").write_text(f"{int(limit_w * 1e6)}\n")
        self.start_uj = wrap_uj - 3_000_000  # wraps within the first seconds
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._write()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _write(self) -> None:
        uj = int(self.start_uj + self.watts * 1e6 * (time.perf_counter() - self.t0)) % self.wrap
        tmp = self.zone / "energy_uj.tmp"
        tmp.write_text(f"{uj}\n")
        os.replace(tmp, self.zone / "energy_uj")

    def _loop(self) -> None:
        while not self._stop.wait(0.005):
            self._write()

    def __enter__(self) -> FakeRapl:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()


@pytest.fixture
def fake_power(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Make the CPU's power source read a test-written RAPL tree: ``fake_power(watts, limit_w)``."""
    started = []

    def make(watts: float, limit_w: float | None = None) -> FakeRapl:
        rapl = FakeRapl(tmp_path / f"powercap{len(started)}", watts, limit_w).__enter__()
        started.append(rapl)
        monkeypatch.setitem(power.SOURCES, "cpu", [lambda accel, index: power.HostSource(powercap=rapl.root)])
        return rapl

    yield make
    for rapl in started:
        rapl.__exit__()


# --- the sampler and its sources -------------------------------------------------------------------


def test_host_source_without_rapl_says_why(tmp_path: Path) -> None:
    src = power.HostSource(powercap=tmp_path / "absent")
    assert src.power_reason and "no RAPL" in src.power_reason
    r = src.read()
    assert r.watts is None and r.energy_j is None
    limit, why = src.power_limit()
    assert limit is None and why
    # unavailable, never invented: the sampler passes the reason on
    sampler = power.PowerSampler(CpuBackend(), [0], interval_s=0.01, sources={0: src})
    with sampler:
        a = sampler.mark()
        time.sleep(0.05)
        b = sampler.mark()
    w = sampler.window(a, b, 0)
    assert w.avg_w is None and w.max_w is None and w.energy_j is None and w.reason == src.power_reason
    assert sampler.power_reason(0) == src.power_reason
    assert all(s.watts is None and s.energy_j is None for s in sampler.samples())


def test_unreadable_rapl_counter_is_a_reason(tmp_path: Path) -> None:
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").mkdir()  # reading a directory fails like an unreadable file
    src = power.HostSource(powercap=tmp_path)
    assert src.power_reason and "energy_uj" in src.power_reason


def test_rapl_energy_counter_with_wraparound_and_limit(tmp_path: Path) -> None:
    with FakeRapl(tmp_path, watts=40.0, limit_w=65.0):
        src = power.HostSource(powercap=tmp_path)
        assert src.power_reason is None
        assert src.power_limit() == (65.0, "RAPL long_term package limit (constraint_*_power_limit_uw)")
        sampler = power.PowerSampler(CpuBackend(), [0], interval_s=0.02, sources={0: src}, started_at=time.time())
        with sampler:
            a = sampler.mark()
            time.sleep(0.6)
            b = sampler.mark()
            time.sleep(0.2)
        w = sampler.window(a, b, 0)
    # the counter wrapped (it starts 3 J below the wrap point and advances 40 J/s): energy stays monotonic
    # (loose: the test's writer thread updates the file every few ms, later when the machine is busy)
    assert w.energy_j is not None and w.energy_j == pytest.approx(40.0 * w.duration_s, rel=0.25)
    assert w.avg_w == pytest.approx(40.0, rel=0.25) and "energy counter" in w.method
    assert w.max_w is not None and 20 < w.max_w < 80
    samples = sampler.samples()
    assert len(samples) >= 10 and all(s.device == 0 for s in samples)
    assert [s.t for s in samples] == sorted(s.t for s in samples) and samples[0].t >= 0
    energies = [s.energy_j for s in samples]
    assert all(e2 >= e1 for e1, e2 in itertools.pairwise(energies))


class SteppedSource(power.Source):
    """A source whose power follows a script (not a torch stand-in: a power meter stand-in)."""

    name = "scripted"

    def __init__(self, watts) -> None:
        super().__init__()
        self.power_reason = None
        self.watts = watts

    def read(self) -> power.Reading:
        t = time.perf_counter()
        return power.Reading(t, watts=self.watts(t), temperature_c=50.0, clock_mhz=1000.0)


def test_sampler_without_energy_counter_averages_samples_and_thins_storage() -> None:
    src = SteppedSource(lambda t: 100.0 if int(t * 50) % 2 else 200.0)
    sampler = power.PowerSampler(CpuBackend(), [0], interval_s=0.002, max_samples=40, sources={0: src})
    with sampler:
        a = sampler.mark()
        time.sleep(0.4)
        b = sampler.mark()
    w = sampler.window(a, b, 0)
    assert w.method.startswith("mean of") and 100 <= w.avg_w <= 200 and w.max_w == 200.0
    assert w.avg_clock_mhz == 1000.0 and w.max_temperature_c == 50.0
    assert len(sampler.samples()) <= 40  # thinned, while the running maximum kept every read
    assert sampler.max_watts(0) == 200.0 and sampler.throttle_counts(0)[1] > 40


def test_hwmon_source(tmp_path: Path) -> None:
    hw = tmp_path / "0000:03:00.0" / "hwmon" / "hwmon4"
    hw.mkdir(parents=True)
    (hw / "power1_average").write_text("215000000\n")
    (hw / "power1_cap").write_text("300000000\n")
    (hw / "temp1_input").write_text("61000\n")
    (tmp_path / "0000:03:00.0" / "gpu_busy_percent").write_text("97\n")
    src = power.HwmonSource(tmp_path / "0000:03:00.0")
    assert src.power_reason is None
    r = src.read()
    assert (r.watts, r.temperature_c, r.utilization_pct) == (215.0, 61.0, 97.0)
    assert src.power_limit()[0] == 300.0
    bare = power.HwmonSource(tmp_path / "nothing")
    assert bare.power_reason and "hwmon" in bare.power_reason


def test_nvml_source_without_nvidia_says_why() -> None:
    src = power.NvmlSource(CpuBackend(), 0)
    assert src.power_reason  # no NVML library or no NVIDIA driver here
    assert src.read().watts is None and src.power_limit()[0] is None
    src.close()


# --- judgement functions ---------------------------------------------------------------------------


def test_power_load_judgement() -> None:
    from cardeval_workloads.suite import power_load

    ok, detail, observed, _ = power_load.judge(
        [("idle", 60), ("20", 110), ("50", 190), ("80", 185), ("full", 300)], 10.0, 10.0)
    assert ok and "none did" in detail and observed.startswith("60,110")  # a 5 W dip is within 10 % of 240 W
    ok, detail, _, _ = power_load.judge([("idle", 60), ("20", 200), ("50", 120), ("full", 300)], 10.0, 10.0)
    assert not ok and "50 (120 W)" in detail
    ok, detail, _, _ = power_load.judge([("idle", 100), ("50", 101), ("full", 104)], 10.0, 10.0)
    assert not ok and "full/idle = 1.04" in detail  # flat power does not follow load


def test_power_limit_judgement() -> None:
    from cardeval_workloads.suite import power_limit

    assert power_limit.judge(409.0, 400.0, 5.0)[0] is True   # within the 5 % tolerance
    ok, detail = power_limit.judge(421.0, 400.0, 5.0)
    assert ok is False and "421 W > 420 W" in detail


def test_stability_score_and_fault_free_time() -> None:
    from cardeval_workloads.suite import stress

    assert stress.stability(0, 72.0) == (1.0, 1.0, pytest.approx(0.8))
    crash, ff, score = stress.stability(1, 36.0)
    assert (crash, ff) == (0.25, 0.5) and score == pytest.approx(0.6 * 0.25 + 0.2 * 0.5)
    assert stress.longest_gap(0.0, 10.0, []) == 10.0
    assert stress.longest_gap(0.0, 10.0, [2.0, 9.0]) == 7.0


# --- transfer ---------------------------------------------------------------------------------------


def test_transfer_link_rate_and_pattern() -> None:
    import torch

    from cardeval_workloads.suite import transfer

    assert transfer.nominal_gbps(4, 16) == pytest.approx(31.5, rel=1e-3)
    assert transfer.nominal_gbps(5, 16) == pytest.approx(63.0, rel=1e-3)
    assert transfer.nominal_gbps(3, 8) == pytest.approx(7.88, rel=1e-3)
    assert transfer.nominal_gbps(9, 16) is None
    a = transfer.fill_pattern(torch.empty(3000, dtype=torch.uint8), 7)
    old, transfer.CHUNK = transfer.CHUNK, 1000  # the chunked computation gives the same bytes
    try:
        b = transfer.fill_pattern(torch.empty(3000, dtype=torch.uint8), 7)
    finally:
        transfer.CHUNK = old
    assert torch.equal(a, b) and len(set(a.tolist())) > 200
    assert not torch.equal(a, transfer.fill_pattern(torch.empty(3000, dtype=torch.uint8), 8))


@pytest.mark.parametrize("inject", [None, "h2d", "d2h"])
def test_transfer_copy_and_verify_path_catches_a_flipped_byte(inject: str | None) -> None:
    """The measuring and verifying code of ``transfer`` on host buffers standing for both sides.

    On a CPU the workload itself reports no link (next test); this exercises the
    copy, timing and byte-for-byte comparison that run on a card.
    """
    from cardeval_workloads.suite import transfer

    out = EnvelopeBuilder("transfer", "quick")
    params = {"sizes_mib": [1, 2], "repeats": 3, "pageable": True, "inject_error": [inject] if inject else None}
    ctx = RunContext("transfer", "quick", params, CpuBackend(), [0], out,
                     sizes=dict(repeats=3, min_sample_s=0.002, budget_s=0.5, sizes_mib=[1]))
    transfer._Card(ctx, 0).run()
    env = out.build()
    for direction in transfer.DIRECTIONS:
        c = check(env, f"transfer.{direction}_correct")
        assert c.ok is (direction != inject), c.detail
        if direction == inject:
            assert "1 bytes differ" in c.detail and "test hook" in c.detail
        avg = [m for m in env.metrics_named(f"transfer.{direction}_gbps") if m.labels.get("detail") != "true"]
        assert len(avg) == 1 and avg[0].value > 0 and avg[0].stats.n == 2 and avg[0].unit == "GB/s"
        per_size = [m for m in env.metrics_named(f"transfer.{direction}_gbps") if m.labels.get("size_mib")]
        assert {m.labels["size_mib"] for m in per_size} == {"1", "2"}
    fractions = env.metrics_named("transfer.link_fraction")
    assert len(fractions) == 2 and all(m.value is None and "not readable" in m.unavailable for m in fractions)


def test_transfer_on_cpu_reports_no_link(tmp_path: Path) -> None:
    proc, env, compact = run_cli("transfer", "--profile", "quick", "--device", "cpu", tmp_path=tmp_path)
    assert proc.returncode == 0 and env.status == "ok", proc.stderr[-2000:]
    for direction in ("h2d", "d2h"):
        c = check(env, f"transfer.{direction}_correct")
        assert c.ok is None and "no host↔card link" in c.detail and c.device == 0
        m = env.metric(f"transfer.{direction}_gbps", device=0)
        assert m.value is None and "host CPU" in m.unavailable
    assert {c.name for c in compact.checks} == {"transfer.h2d_correct", "transfer.d2h_correct"}


# --- memory -----------------------------------------------------------------------------------------


def test_memory_on_cpu() -> None:
    env, code = run_inprocess("memory", "--profile", "quick", "--device", "cpu", "--param", "repeats=3")
    assert code == 0 and env.status == "ok", env.errors
    compact = parse_envelope(env.to_compact_json())
    cap = env.metric("memory.capacity_gb", device=0)
    assert cap.unit == "GB" and cap.value == pytest.approx(int(cap.labels["bytes"]) / 1e9)
    copy, triad = env.metric("memory.d2d_gbps", device=0), env.metric("memory.triad_gbps", device=0)
    bw = env.metric("memory.bandwidth_gbps", device=0)
    assert copy.value > 0 and triad.value > 0 and bw.value == max(copy.value, triad.value)
    assert all(m.unit == "GB/s" for m in (copy, triad, bw))
    assert "read+write" in bw.labels["convention"] and copy.labels["bytes_per_call"] == str(
        2 * int(copy.labels["buffer_mib"]) * 2**20)
    llc = env.metric("memory.d2d_gbps").labels["llc"]
    if "MiB" in llc:  # buffers at least 4x the last-level cache
        assert int(copy.labels["buffer_mib"]) >= 4 * int(llc.split()[0])
    assert check(env, "memory.copy_correct").ok is True
    assert compact.metric("memory.bandwidth_gbps") is not None and compact.metric("memory.capacity_gb") is not None


def test_memory_copy_check_catches_corruption() -> None:
    env, code = run_inprocess("memory", "--profile", "quick", "--device", "cpu", "--param", "buffer_mib=4",
                              "--param", "force_small=true", "--param", "repeats=3", "--param", "inject_error=true")
    assert code == 0
    c = check(env, "memory.copy_correct")
    assert c.ok is False and c.observed == 1 and "test hook" in c.detail
    assert env.metric("memory.d2d_gbps").labels["cache_influenced"] == "true"


# --- power-load and power-limit ---------------------------------------------------------------------


def test_power_load_on_this_machine() -> None:
    env, code = run_inprocess("power-load", "--profile", "quick", "--device", "cpu", "--param", "levels=50",
                              "--param", "idle_s=0.4", "--param", "level_s=0.6", "--param", "size=128")
    assert code == 0 and env.status == "ok", env.errors
    levels = {m.labels["level"]: m for m in env.metrics_named("power_load.power_w")}
    assert set(levels) == {"idle", "50", "full"}
    duty = {m.labels["level"]: m.value for m in env.metrics_named("power_load.duty_pct")}
    # duty-cycled, not flat out (wide bounds: on a shared 2-core machine other work stretches bursts)
    assert duty["idle"] == 0 and 10 < duty["50"] < 99.5 and duty["full"] == 100
    correct = check(env, "power_load.computes_correctly")
    assert correct.ok is True and "50 correct, full correct" in correct.detail, correct.detail
    rises = check(env, "power_load.rises_with_load")
    if MACHINE_HAS_POWER:
        assert rises.ok is not None
    else:
        assert rises.ok is None and "power not readable" in rises.detail
        assert all(m.value is None and m.unavailable for m in levels.values())
    assert env.power, "clock/utilisation samples are recorded even without power"


def test_power_load_fails_when_power_does_not_follow_load(fake_power) -> None:
    fake_power(watts=80.0)  # a constant 80 W whatever the load
    env, code = run_inprocess("power-load", "--profile", "quick", "--device", "cpu", "--param", "levels=50",
                              "--param", "idle_s=0.5", "--param", "level_s=0.5", "--param", "size=96",
                              "--param", "min_rise_pct=40")  # margin for the test writer's timing noise
    assert code == 0
    powers = {m.labels["level"]: m.value for m in env.metrics_named("power_load.power_w")}
    assert all(v == pytest.approx(80.0, rel=0.35) for v in powers.values())
    rises = check(env, "power_load.rises_with_load")
    assert rises.ok is False and "full/idle" in rises.detail
    assert any(s.watts is not None and s.energy_j is not None for s in env.power)


def test_power_limit_unreadable_and_healthy_after_can_fail() -> None:
    env, code = run_inprocess("power-limit", "--profile", "quick", "--device", "cpu", "--param", "duration_s=0.5",
                              "--param", "size=128", "--param", "inject_error=true")
    assert code == 0 and env.status == "ok", env.errors
    healthy = check(env, "power_limit.healthy_after")
    assert healthy.ok is False and "test hook" in healthy.detail
    within = check(env, "power_limit.within_limit")
    if not MACHINE_HAS_POWER:
        assert within.ok is None and "power not readable" in within.detail
        assert env.metric("power_limit.max_w").unavailable
    assert env.metric("power_limit.duration_s").value >= 0.5


@pytest.mark.parametrize("watts, limit, ok", [(60.0, 30.0, False), (12.0, 30.0, True)])
def test_power_limit_judged_against_the_enforced_limit(fake_power, watts: float, limit: float, ok: bool) -> None:
    fake_power(watts=watts, limit_w=limit)
    env, code = run_inprocess("power-limit", "--profile", "quick", "--device", "cpu", "--param", "duration_s=0.6",
                              "--param", "size=96")
    assert code == 0
    within = check(env, "power_limit.within_limit")
    assert within.ok is ok, within.detail
    assert env.metric("power_limit.limit_w").value == limit
    assert env.metric("power_limit.avg_w").value == pytest.approx(watts, rel=0.35)
    assert check(env, "power_limit.healthy_after").ok is True


def test_compute_efficiency_from_the_energy_counter(fake_power) -> None:
    fake_power(watts=25.0)
    env, code = run_inprocess("compute", "--profile", "quick", "--device", "cpu", "--param", "dtypes=fp32,int8",
                              "--param", "sizes=64", "--param", "repeats=3")
    assert code == 0, env.errors
    for fmt, name, unit in (("fp32", "efficiency.fp32_tflops_per_w", "TFLOPS/W"),
                            ("int8", "efficiency.int8_tops_per_w", "TOPS/W")):
        eff, peak = env.metric(name, device=0), env.metric(f"peak.{fmt}", device=0)
        avg_w = float(eff.labels["avg_w"])  # the energy counter's average over the peak size's run
        assert eff.unit == unit and eff.value == pytest.approx(peak.value / avg_w, rel=1e-3)
        assert 10.0 < avg_w < 50.0
    # A CPU computes int8 on its SIMD vector units, or on its AMX matrix unit where it has one.
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        amx_int8 = any(line.startswith("flags") and " amx_int8" in line for line in cpuinfo)
    vector = env.metric("efficiency.vector_sum", device=0)
    assert vector.unit == "GFLOPS/W" and vector.labels["formats"] == ("fp32" if amx_int8 else "fp32,int8")
    assert "energy counter" in vector.labels["power"]
    def per_watt(fmt: str, name: str) -> float:  # GFLOPS/W (GOPS/W) of one format
        return env.metric(f"peak.{fmt}").value * 1000 / float(env.metric(name).labels["avg_w"])

    fp32, int8 = per_watt("fp32", "efficiency.fp32_tflops_per_w"), per_watt("int8", "efficiency.int8_tops_per_w")
    tensor = env.metric("efficiency.tensor_sum", device=0)
    if amx_int8:
        assert vector.value == pytest.approx(fp32, rel=1e-3)  # the labels round to 4 digits
        assert tensor.unit == "GOPS/W" and tensor.labels["formats"] == "int8"
        assert tensor.value == pytest.approx(int8, rel=1e-3)
    else:
        assert vector.value == pytest.approx(fp32 + int8, rel=1e-3)
        assert tensor.value is None


def test_compute_efficiency_unavailable_without_power(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(power.SOURCES, "cpu", [lambda a, i: power.HostSource(powercap=tmp_path / "none")])
    env, code = run_inprocess("compute", "--profile", "quick", "--device", "cpu", "--param", "dtypes=fp32",
                              "--param", "sizes=64", "--param", "repeats=3")
    assert code == 0
    for name in ("efficiency.fp32_tflops_per_w", "efficiency.tensor_sum", "efficiency.vector_sum"):
        m = env.metric(name, device=0)
        assert m.value is None and m.unavailable, name
    assert "no RAPL" in env.metric("efficiency.vector_sum").unavailable


# --- stress -----------------------------------------------------------------------------------------


def test_stress_short_run_reports_its_duration(tmp_path: Path) -> None:
    proc, env, compact = run_cli("stress", "--profile", "quick", "--device", "cpu", "--param", "duration_s=2",
                                 "--param", "check_interval_s=0.5", "--param", "size=128", tmp_path=tmp_path)
    assert proc.returncode == 0 and env.status == "ok", proc.stderr[-2000:]
    duration = env.metric("stress.duration_s", device=0)
    assert duration.unit == "s" and 2.0 <= duration.value < 6.0 and duration.labels["requested_s"] == "2"
    assert duration.labels["cards_at_once"] == "1"  # the CPU is one device; all selected cards run at once
    for name in ("stress.no_errors", "stress.results_correct", "stress.device_present"):
        assert check(env, name).ok is True, check(env, name).detail
    # A comparison at least every check interval, and one at the end: never more than the interval allows
    # (how many fit depends on the machine's speed, so no lower bound beyond the final one).
    comparisons = env.metric("stress.comparisons").value
    assert 1 <= comparisons <= duration.value / 0.5 + 2 and env.metric("stress.crashes").value == 0
    assert env.metric("stress.crash_score").value == 1.0
    assert env.metric("stress.stability_score").value == pytest.approx(
        0.6 + 0.2 * env.metric("stress.longest_fault_free_h").value / 72)
    assert compact.metric("stress.duration_s").value == duration.value
    assert {c.name for c in compact.checks} >= {"stress.no_errors", "stress.results_correct", "stress.device_present"}


@pytest.mark.parametrize("inject, failing", [("result", "stress.results_correct"), ("exception", "stress.no_errors")])
def test_stress_checks_can_fail(inject: str, failing: str) -> None:
    env, code = run_inprocess("stress", "--profile", "quick", "--device", "cpu", "--param", "duration_s=1.5",
                              "--param", "check_interval_s=0.3", "--param", "size=96", "--param",
                              f"inject_error={inject}")
    assert code == 0
    assert check(env, failing).ok is False and "test hook" in check(env, failing).detail
    others = {"stress.results_correct", "stress.no_errors", "stress.device_present"} - {failing}
    assert all(check(env, name).ok is True for name in others)
    if inject == "exception":
        assert env.metric("stress.crashes").value == 1 and env.metric("stress.crash_score").value == 0.25
    else:
        assert env.metric("stress.wrong_results").value == 1


def test_stress_cut_short_by_sigterm_still_reports(tmp_path: Path) -> None:
    """A 72-hour run ended early by Kubernetes still says how long it ran and what it saw."""
    env = dict(os.environ, TERMINATION_MESSAGE_PATH=str(tmp_path / "t"), PYTHONPATH=str(ROOT / "workloads"))
    proc = subprocess.Popen([sys.executable, "-m", "cardeval_workloads", "stress", "--profile", "quick", "--device",
                             "cpu", "--param", "duration_s=120", "--param", "size=96"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stderr:  # wait until the load runs
            if "power on cpu" in line:
                break
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    envelope = find_envelope_in_output(out)
    assert envelope.status == "error" and "SIGTERM" in envelope.errors[0]
    duration = envelope.metric("stress.duration_s")
    assert duration is not None and 0.5 < duration.value < 60
    assert check(envelope, "stress.no_errors").ok is True
