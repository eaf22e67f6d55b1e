"""Unit tests of the harness helpers: statistics, timing, parameters, readers, bounds."""

from __future__ import annotations

import math
import stat
import time
from pathlib import Path

import pytest

from cardeval_workloads.envelope import InfoField, Stats
from cardeval_workloads.harness import registry
from cardeval_workloads.harness.builder import EnvelopeBuilder
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.mgmt.base import have, merge, missing
from cardeval_workloads.harness.mgmt.command import CommandReader, parse_json, parse_text, to_bytes
from cardeval_workloads.harness.mgmt.host import HostReader
from cardeval_workloads.harness.mgmt.pci import PciSysfsReader, normalize_bus_id
from cardeval_workloads.harness.params import Param, int_list, parse_params, str_list
from cardeval_workloads.harness.timing import EventTimer, OverBudgetError, WallTimer, measure


# --- statistics ---------------------------------------------------------------------


def test_stats_of() -> None:
    s = Stats.of([3.0, 1.0, 2.0, 10.0])
    assert (s.n, s.min, s.max, s.median, s.mean) == (4, 1.0, 10.0, 2.5, 4.0)
    assert math.isclose(s.stdev, math.sqrt(sum((v - 4.0) ** 2 for v in [3, 1, 2, 10]) / 3))
    assert s.samples == [3.0, 1.0, 2.0, 10.0]  # in measurement order
    assert Stats.of([5.0]).stdev == 0 and Stats.of([1.0, 2.0, 9.0]).median == 2.0
    assert Stats.of([1.0, 2.0], keep_samples=False).samples == []
    with pytest.raises(ValueError):
        Stats.of([])


# --- timing -------------------------------------------------------------------------


class Counter:
    def __init__(self, sleep: float = 0.0) -> None:
        self.calls, self.sleep = 0, sleep

    def __call__(self) -> None:
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)


def test_measure_calibrates_inner_and_counts_calls() -> None:
    fn = Counter(sleep=0.001)
    syncs = []
    t = measure(fn, WallTimer(lambda: syncs.append(1)), warmup=2, repeats=4, min_sample_s=0.005)
    assert len(t.per_call_s) == 4 and t.inner >= 2  # ~1 ms calls batched to >= 5 ms samples
    assert t.warmup_calls >= 2 + 1  # warm-up, then at least one calibration call
    assert fn.calls == t.warmup_calls + 4 * t.inner  # warm-up calls are made but not sampled
    assert all(s >= 0.001 for s in t.per_call_s)
    assert len(syncs) % 2 == 0 and len(syncs) >= 2 * (2 + 1 + 4)  # every interval starts and ends synchronised
    assert t.method == "wall-clock+synchronize"
    rate = t.stats_of(lambda s: 1 / s)
    assert rate.n == 4 and rate.max <= 1000


def test_measure_over_budget_is_reported_not_guessed() -> None:
    with pytest.raises(OverBudgetError) as info:
        measure(Counter(sleep=0.02), WallTimer(), warmup=1, repeats=5, min_sample_s=0, budget_s=0.03)
    assert info.value.per_call_s >= 0.02 and "budget" in str(info.value)


def test_measure_budget_stops_early_but_keeps_min_repeats() -> None:
    t = measure(Counter(sleep=0.01), WallTimer(), warmup=1, repeats=50, min_sample_s=0, budget_s=0.06,
                min_repeats=3)
    assert 3 <= len(t.per_call_s) < 50


def test_measure_warmup_seconds() -> None:
    fn = Counter(sleep=0.002)
    t = measure(fn, WallTimer(), warmup=1, warmup_s=0.03, repeats=1, min_sample_s=0)
    # warm-up runs for warmup_s, not just `warmup` calls: more than one 2 ms call fits in 30 ms even on a
    # loaded machine (a call count near 15 would be a timed assertion, which a busy CI breaks)
    assert 2 <= t.warmup_calls <= 16


def test_measure_calibrates_fast_calls_in_batches() -> None:
    fn = Counter()
    t = measure(fn, WallTimer(), warmup=1, repeats=2, min_sample_s=0.004)
    assert t.inner > 100 and t.warmup_calls > 100  # a ~µs call is never timed alone


class FakeEvent:
    """A CUDA-style event stand-in (device timing is a backend feature; this checks the arithmetic)."""

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        return (end.t - self.t) * 1000.0  # milliseconds, like torch.cuda.Event


def test_event_timer_converts_milliseconds() -> None:
    elapsed = EventTimer(FakeEvent, lambda: None).time(Counter(sleep=0.01), 2)
    assert 0.019 < elapsed < 0.5


# --- parameters, registry, builder ---------------------------------------------------


def test_params() -> None:
    declared = {"n": Param(int, 3), "on": Param(bool, False), "xs": Param(int_list),
                "fmt": Param(str_list, ["a"], choices=("a", "b"))}
    values, given = parse_params(["n=5", "on=yes", "xs=1,2", "fmt=b,a"], declared, "w")
    assert values == {"n": 5, "on": True, "xs": [1, 2], "fmt": ["b", "a"]} and given["n"] == "5"
    assert parse_params([], declared, "w")[0]["n"] == 3
    for bad, text in ((["m=1"], "no parameter 'm'"), (["n=x"], "n="), (["n=1", "n=2"], "twice"),
                      (["fmt=c"], "not one of"), (["xs=-1"], "positive"), (["on=maybe"], "boolean")):
        with pytest.raises(UsageError, match=text):
            parse_params(bad, declared, "w")


def test_registry() -> None:
    assert {"info", "compute"} <= set(registry.available())
    assert registry.load("compute").NAME == "compute"
    with pytest.raises(UsageError, match="unknown workload"):
        registry.load("nope")
    with pytest.raises(UsageError):
        registry.load("../etc")


def test_builder_rejects_duplicates_and_numberless_metrics() -> None:
    b = EnvelopeBuilder("w", "quick")
    b.metric("m", 1.0, "x", device=0, labels={"shape": "1"})
    b.metric("m", 2.0, "x", device=0, labels={"shape": "2"})
    with pytest.raises(ValueError, match="twice"):
        b.metric("m", 3.0, "x", device=0, labels={"shape": "1"})
    with pytest.raises(ValueError, match="unavailable"):
        b.metric("n", None)
    b.check("c", None, "undecided")
    env = b.build()
    assert env.status == "ok" and len(env.metrics) == 2
    assert b.build("error").errors  # an error envelope always says something


# --- management readers --------------------------------------------------------------


def test_merge_keeps_first_value_and_collects_reasons() -> None:
    fields = {"a": missing("reader 1 cannot"), "b": have("x", "r1")}
    merge(fields, {"a": missing("reader 2 cannot"), "b": have("y", "r2"), "c": have(1, "r2")})
    assert fields["a"].unavailable == "reader 1 cannot; reader 2 cannot"
    assert fields["b"].value == "x" and fields["c"].value == "1"
    merge(fields, {"a": have("z", "r3")})
    assert fields["a"].value == "z" and fields["a"].source == "r3"


def test_pci_sysfs_reader(tmp_path: Path) -> None:
    assert normalize_bus_id("00000000:17:00.0") == "0000:17:00.0"
    assert normalize_bus_id("3b:00.1") == "0000:3b:00.1"
    assert normalize_bus_id("garbage") is None
    dev = tmp_path / "0000:17:00.0"
    dev.mkdir()
    for name, text in {"vendor": "0x10de", "max_link_speed": "32.0 GT/s PCIe", "max_link_width": "16",
                       "current_link_speed": "2.5 GT/s PCIe", "current_link_width": "16"}.items():
        (dev / name).write_text(text + "\n")
    out = PciSysfsReader(tmp_path).read(None, 0, {"pci_bus_id": InfoField(value="00000000:17:00.0", source="t")})
    assert out["vendor"].value == "NVIDIA (PCI vendor 0x10de)"
    # the endpoint's max_link_speed is the card's own; without the port above it the link's maximum is unknown
    assert (out["pcie_gen_card"].value, out["pcie_width_max"].value) == ("5", "16")
    assert out["pcie_gen_max"].value is None and "lower of card and slot" in out["pcie_gen_max"].unavailable
    assert out["pcie_gen_current"].value == "1"
    unknown = PciSysfsReader(tmp_path).read(None, 0, {})
    assert all(f.value is None and f.unavailable for f in unknown.values())


def test_command_parsing() -> None:
    text = "| Serial Number : ABC123 |\n  Chip Name: Ascend910B\nHBM Capacity(MB) : 65536\nbad line\n"
    pairs = parse_text(text)
    assert pairs["Serial Number"] == "ABC123" and pairs["Chip Name"] == "Ascend910B"
    assert to_bytes("HBM Capacity(MB)", "65536") == 65536 * 10**6
    assert to_bytes("Memory", "64 GiB") == 64 * 2**30
    assert to_bytes("Memory", "64") is None  # no unit anywhere: do not guess
    assert parse_json('{"card1": {"Card Series": "MI300X", "x": {"nested": 1}}}', 1) == {"Card Series": "MI300X"}


def test_command_reader_runs_a_tool(tmp_path: Path) -> None:
    tool = tmp_path / "fake-smi"
    tool.write_text("#!/bin/sh\necho \"Product Name : Card-$2\"\necho 'Serial Number : SN42'\n"
                    "echo 'Firmware Version : 1.2.3'\necho 'Memory Size : 32 GB'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    out = CommandReader("fake-smi", [[str(tool), "-i", "{index}"]]).read(None, 3, {})
    assert out["model"].value == "Card-3" and out["serial"].value == "SN42"
    assert out["firmware"].value == "1.2.3" and out["memory_total_bytes"].value == str(32 * 10**9)
    assert out["vendor"].value is None and "not in the output" in out["vendor"].unavailable
    gone = CommandReader("x", [["/nonexistent/smi"]]).read(None, 0, {})
    assert "not found" in gone["serial"].unavailable


def test_host_reader(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text("vendor_id\t: GenuineIntel\nmodel name\t: Xeon Test\nmicrocode\t: 0x2b\n")
    (proc / "meminfo").write_text("MemTotal:       1024 kB\nMemFree: 1 kB\n")
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "product_serial").write_text("SYS-1\n")
    out = HostReader(proc, dmi, tmp_path / "edac").read(None, 0, {})
    assert (out["vendor"].value, out["model"].value, out["serial"].value) == ("GenuineIntel", "Xeon Test", "SYS-1")
    assert out["firmware"].value == "microcode 0x2b" and out["memory_total_bytes"].value == "1048576"
    assert out["uuid"].value is None and out["uuid"].unavailable
    assert "not applicable" in out["driver"].unavailable


def test_nvml_reader_without_nvidia_says_why() -> None:
    from cardeval_workloads.harness.device import CpuBackend
    from cardeval_workloads.harness.mgmt.nvml import NvmlReader

    reader = NvmlReader()
    try:
        if reader.pynvml is not None:
            pytest.skip("NVML is present on this machine")
        out = reader.read(CpuBackend(), 0, {})
        assert out["serial"].value is None and "NVML unavailable" in out["serial"].unavailable
    finally:
        reader.close()


# --- devices and the error bound ----------------------------------------------------


def test_cpu_backend_and_device_list() -> None:
    import torch

    from cardeval_workloads.harness import device

    cpu = device.select("cpu")
    assert cpu.backend == "cpu" and cpu.count() == 1 and not cpu.is_accelerator
    assert cpu.device(0) == torch.device("cpu") and cpu.dtype_support(0)["tf32"]
    free, total = cpu.memory_info(0)
    assert 0 < free <= total
    assert device.parse_devices("all", cpu) == [0] and device.parse_devices("0", cpu) == [0]
    with pytest.raises(UsageError):
        device.parse_devices("1", cpu)
    if not torch.cuda.is_available():
        assert device.select("auto").backend in ("cpu",) + device.OTHER_BACKENDS
        with pytest.raises(RuntimeError, match="cuda"):
            device.select("cuda")


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16", "int8"])
def test_bound_accepts_correct_and_rejects_corrupted(fmt: str) -> None:
    import torch

    from cardeval_workloads.harness.testhook import corrupt_one
    from cardeval_workloads.suite import _gemm

    gen = torch.Generator().manual_seed(1)
    case = _gemm.make_case(fmt, 64, 256, 32, torch.device("cpu"), generator=gen)
    good = case.run()
    v = _gemm.verify(case, good)
    assert v.ok and v.nonfinite == 0, v
    assert not _gemm.verify(case, corrupt_one(good.clone())).ok
    if fmt != "int8":
        # a wrong transposition or a result computed from other data is far outside the bound
        other = _gemm.make_case(fmt, 64, 256, 32, torch.device("cpu"), generator=gen).run()
        assert _gemm.verify(case, other).ratio > 10
        broken = good.clone()
        broken[0, 0] = float("nan")
        assert not _gemm.verify(case, broken).ok and _gemm.verify(case, broken).nonfinite == 1
    if fmt == "fp32":
        # fp16 rounding of an fp32 result is caught by the fp32 bound
        assert not _gemm.verify(case, good.half().float()).ok
