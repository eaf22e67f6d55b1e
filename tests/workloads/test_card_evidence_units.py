"""Unit tests of what the card workloads conclude from the card's own interfaces.

* ``fault``: the provoked fault counts as reported only with the card's error code (a device-fault
  runtime code or the driver's Xid); the host CPU is undetermined; driver events other than the
  fault's fail ``fault.driver_events``; NVML's event stream read through a fake driver module.
* ``info``: the card's own PCIe generation apart from the link's and the slot's (NVML and sysfs),
  the ECC error counters and ``info.ecc_counters_readable`` (read / refused / not offered), and the
  host reader labelling everything as the host's.
* ``stress``: the scheduler that runs all cards at once (fake workers) and a real CPU run with two
  stand-in cards.
* ``internode``: the transport read from NCCL's log and the host count.
* ``power-limit`` / ``power-load``: the tolerance changes the verdict on the same samples; the
  product under each load level is checked and a failing level named.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from cardeval_workloads.envelope import InfoField
from cardeval_workloads.harness import cli, mgmt, power
from cardeval_workloads.harness.builder import EnvelopeBuilder
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.device import CpuBackend
from cardeval_workloads.harness.mgmt.base import have, missing, refused
from cardeval_workloads.harness.mgmt.host import HostReader
from cardeval_workloads.harness.mgmt.pci import PciSysfsReader
from cardeval_workloads.suite import fault, info, internode, power_load, stress


# --- a fake NVML (the ``pynvml`` module) ----------------------------------------------------------


class NVMLError(Exception):
    pass


class NVMLError_Timeout(NVMLError):  # noqa: N801, N818 - pynvml's naming
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801, N818 - pynvml's naming
    pass


def fake_pynvml(events=(), supported=0xFF, refuse_ecc=False, refuse_register=False) -> types.ModuleType:
    """One card: link gen 4 (x16), the card's own gen 5, ECC counts 3/0, and ``events`` queued."""
    nv = types.ModuleType("pynvml")
    queue = list(events)
    nv.calls = []
    nv.nvmlEventTypeSingleBitEccError, nv.nvmlEventTypeDoubleBitEccError = 0x1, 0x2
    nv.nvmlEventTypeXidCriticalError = 0x8
    nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 0, 1
    nv.NVML_VOLATILE_ECC, nv.NVML_AGGREGATE_ECC = 0, 1
    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetCount = lambda: 1
    nv.nvmlDeviceGetHandleByIndex = lambda i: "h0"
    nv.nvmlDeviceGetName = lambda h: "Fake H100 SXM5 80GB HBM3"
    nv.nvmlDeviceGetSerial = lambda h: "SN1"
    nv.nvmlDeviceGetUUID = lambda h: "GPU-1"
    nv.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: 4       # the link: lower of card and system
    nv.nvmlDeviceGetGpuMaxPcieLinkGeneration = lambda h: 5    # the card's own
    nv.nvmlDeviceGetCurrPcieLinkGeneration = lambda h: 4
    nv.nvmlDeviceGetMaxPcieLinkWidth = lambda h: 16
    nv.nvmlDeviceGetCurrPcieLinkWidth = lambda h: 16
    nv.nvmlDeviceGetEccMode = lambda h: (1, 1)

    def total_ecc(h, kind, counter):
        nv.calls.append(("ecc", kind, counter))
        if refuse_ecc:
            raise NVMLError_NotSupported("Not Supported")
        return 3 if kind == 0 else 0

    nv.nvmlDeviceGetTotalEccErrors = total_ecc
    nv.nvmlDeviceGetSupportedEventTypes = lambda h: supported
    nv.nvmlEventSetCreate = lambda: "set"

    def register(h, mask, event_set):
        nv.calls.append(("register", mask))
        if refuse_register:
            raise NVMLError_NotSupported("Not Supported")

    def wait(event_set, ms):
        if not queue:
            raise NVMLError_Timeout("Timeout")
        kind, data = queue.pop(0)
        return types.SimpleNamespace(eventType=kind, eventData=data)

    nv.nvmlDeviceRegisterEvents = register
    nv.nvmlEventSetWait_v2 = wait
    nv.nvmlEventSetFree = lambda s: nv.calls.append(("free", s))
    return nv


class OneCard:
    """What the NVML readers ask of the accelerator: one card, no torch properties."""

    backend, is_accelerator = "cuda", True

    def count(self) -> int:
        return 1


# --- fault: reported only with the card's error code -------------------------------------------


def test_fault_on_the_host_cpu_is_undetermined() -> None:
    child = {"raised": True, "type": "IndexError", "message": "index 10 is out of bounds for dimension 0 with "
             "size 1", "code": None, "exit": 3, "stderr": "", "mode": "index"}
    ok, detail, observed = fault.judge_report(child, "cpu", False, "cpu", None, "no event stream")
    assert ok is None and observed == "IndexError"
    assert "host CPU has no device error interface" in detail and "not a device fault" in detail
    ok, detail, _ = fault.judge_report({"raised": False, "result": [0.0]}, "cpu", True, "cpu")
    assert ok is None and "swallow test hook" in detail  # not ok=True, and no card to fail either


@pytest.mark.parametrize("child, xids, ok, observed", [
    # the card's runtime reports the MMU fault with its code
    ({"raised": True, "type": "AcceleratorError", "code": 700, "mode": "illegal-address",
      "message": "CUDA error: an illegal memory access was encountered"}, [31], True, "cudaErrorIllegalAddress/700"),
    # the code read from the driver API when torch gives none
    ({"raised": True, "type": "RuntimeError", "code": 700, "code_source": "cuCtxSynchronize",
      "driver_name": "CUDA_ERROR_ILLEGAL_ADDRESS", "message": "CUDA error: an illegal memory access"}, [],
     True, "cudaErrorIllegalAddress/700"),
    # an older torch without error_code: the runtime's error name in its message
    ({"raised": True, "type": "RuntimeError", "code": None, "message": "CUDA error: an illegal memory access was "
      "encountered\nSearch for `cudaErrorIllegalAddress' in https://docs.nvidia.com/cuda/ for more information."},
     [], True, "cudaErrorIllegalAddress/700"),
    # an argument error is not the provoked device fault
    ({"raised": True, "type": "AcceleratorError", "code": 1, "message": "CUDA error: invalid argument"}, [],
     False, "code/1"),
    # no code from the runtime, but the driver's Xid of the fault
    ({"raised": True, "type": "RuntimeError", "code": None, "message": "CUDA error: unspecified"}, [31],
     True, "Xid 31"),
    # a message without any code and no Xid: nothing to check against the error-code documentation
    ({"raised": True, "type": "RuntimeError", "code": None, "message": "CUDA error: unspecified"}, [],
     None, "RuntimeError"),
    # the application swallowed it, the driver still reported the fault
    ({"raised": False, "result": [1.0], "mode": "illegal-address"}, [31, 43], True, "Xid 31"),
    # nobody reported anything
    ({"raised": False, "result": [1.0], "mode": "illegal-address"}, [], False, "no error"),
])
def test_fault_reported_needs_the_cards_error_code(child, xids, ok, observed) -> None:
    child = {"exit": 3, "stderr": "", **child}
    got, detail, seen = fault.judge_report(child, "cuda:0", False, "cuda", xids, None)
    assert (got, seen) == (ok, observed), detail


def test_fault_codes_of_other_backends() -> None:
    ok, _, observed = fault.judge_report({"raised": True, "type": "AcceleratorError", "code": 700, "exit": 3,
                                          "message": "HIP error: an illegal memory access", "stderr": ""},
                                         "rocm:0", False, "rocm")
    assert ok is True and observed == "hipErrorIllegalAddress/700"
    ok, detail, observed = fault.judge_report({"raised": True, "type": "RuntimeError", "code": None, "exit": 3,
                                               "message": "ACL stream synchronize failed, error code is 507015",
                                               "stderr": ""}, "npu:0", False, "npu")
    assert ok is True and observed == "RuntimeError/507015" and "interface documentation" in detail


@pytest.mark.parametrize("events, ok, text", [
    (None, None, "no event stream"),
    ([], True, "no event"),
    ([("xid", 31), ("xid", 43)], True, "only the provoked fault's events (Xid 31, Xid 43)"),
    ([("xid", 31), ("xid", 79)], False, "Xid 79"),
    ([("double-bit ECC error", None)], False, "double-bit ECC error"),
])
def test_driver_events_other_than_the_faults_fail(events, ok, text) -> None:
    got, detail, _ = fault.judge_driver_events(events, "the driver offers no event stream here", "cuda:0")
    assert got is ok and text in detail, detail


def test_nvml_event_stream_is_read_and_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = fake_pynvml(events=[(0x8, 31), (0x8, 79), (0x2, 0)], supported=0x8 | 0x2 | 0x100)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    evidence = fault.NvmlEvidence(OneCard(), 0)
    evidence.watch_events()
    assert ("register", 0x8 | 0x2) in nv.calls  # the supported ones of those watched
    events, why = evidence.collect_events(wait_ms=1)
    assert why is None and events == [("xid", 31), ("xid", 79), ("double-bit ECC error", None)]
    assert ("free", "set") in nv.calls
    ok, detail, observed = fault.judge_driver_events(events, why, "cuda:0")
    assert ok is False and observed == "Xid 79,double-bit ECC error"
    evidence.close()

    refused_nv = fake_pynvml(refuse_register=True, supported=0x8)
    monkeypatch.setitem(sys.modules, "pynvml", refused_nv)
    evidence = fault.NvmlEvidence(OneCard(), 0)
    evidence.watch_events()
    events, why = evidence.collect_events(wait_ms=1)
    assert events is None and "registration failed" in why
    assert fault.judge_driver_events(events, why, "cuda:0")[0] is None


def test_fault_workload_reports_driver_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workload's wiring: the events its evidence collects reach ``fault.driver_events``."""

    class Events(fault.EdacEvidence):
        def collect_events(self):
            return [("xid", 31), ("xid", 48)], None

    monkeypatch.setattr(fault, "_evidence", lambda ctx, index: Events(Path("/nonexistent")))
    env, code = cli.run(["fault", "--profile", "quick", "--device", "cpu"])
    assert code == 0, env.errors
    events = env.checks_named("fault.driver_events")[0]
    assert events.ok is False and "Xid 48" in events.detail and events.device == 0
    assert env.metric("fault.xid_events").value == 2 and env.metric("fault.xid_events").labels["xids"] == "31,48"
    assert env.checks_named("fault.reported")[0].ok is None  # still the host CPU


# --- info: the card's PCIe generation, ECC counters, the host --------------------------------------


def _sysfs(tmp_path: Path, card: str | None, slot: str | None) -> Path:
    """devices/pci0000:00/0000:00:01.0 (a port) / 0000:17:00.0 (the card), linked from bus/."""
    port = tmp_path / "devices" / "pci0000:00" / "0000:00:01.0"
    dev = port / "0000:17:00.0"
    dev.mkdir(parents=True)
    if slot is not None:
        (port / "max_link_speed").write_text(slot + "\n")
    files = {"vendor": "0x10de", "max_link_width": "16", "current_link_speed": "16.0 GT/s PCIe",
             "current_link_width": "16"}
    if card is not None:
        files["max_link_speed"] = card
    for name, text in files.items():
        (dev / name).write_text(text + "\n")
    bus = tmp_path / "bus"
    bus.mkdir()
    (bus / "0000:17:00.0").symlink_to(dev)
    return bus


def test_sysfs_tells_card_slot_and_link_apart(tmp_path: Path) -> None:
    known = {"pci_bus_id": InfoField(value="00000000:17:00.0", source="t")}
    out = PciSysfsReader(_sysfs(tmp_path / "a", "32.0 GT/s PCIe", "16.0 GT/s PCIe")).read(None, 0, known)
    # a gen-5 card in a gen-4 slot: the link is gen 4, the card is gen 5
    assert (out["pcie_gen_card"].value, out["pcie_gen_slot"].value, out["pcie_gen_max"].value) == ("5", "4", "4")
    assert out["pcie_gen_current"].value == "4" and "card" in out["pcie_gen_card"].source
    alone = PciSysfsReader(_sysfs(tmp_path / "b", "32.0 GT/s PCIe", None)).read(None, 0, known)
    assert alone["pcie_gen_card"].value == "5" and alone["pcie_gen_slot"].value is None
    assert alone["pcie_gen_max"].value is None and "upstream port" in alone["pcie_gen_max"].unavailable


def test_nvml_reads_the_cards_own_generation_and_ecc_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    from cardeval_workloads.harness.mgmt.nvml import NvmlReader

    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    out = NvmlReader().read(OneCard(), 0, {})
    assert (out["pcie_gen_max"].value, out["pcie_gen_card"].value) == ("4", "5")
    assert (out["ecc_errors_corrected"].value, out["ecc_errors_uncorrected"].value) == ("3", "0")
    assert "aggregate" in out["ecc_errors_corrected"].source

    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(refuse_ecc=True))
    out = NvmlReader().read(OneCard(), 0, {})
    assert mgmt.was_refused(out["ecc_errors_corrected"]) and "NotSupported" in out["ecc_errors_corrected"].unavailable


def _ctx(accel, workload="info", devices=(0,), params=None, sizes=None) -> RunContext:
    return RunContext(workload=workload, profile="quick", params=dict(params or {}), accel=accel,
                      devices=list(devices), out=EnvelopeBuilder(workload), sizes=dict(sizes or {}),
                      log=logging.getLogger("test"))


@pytest.mark.parametrize("fields, ok", [
    ({"ecc_errors_corrected": have(0, "nvml"), "ecc_errors_uncorrected": have(0, "nvml")}, True),
    ({"ecc_errors_corrected": have(0, "nvml"), "ecc_errors_uncorrected": refused("NVML: NoPermission")}, False),
    ({"ecc_errors_corrected": missing("NVML unavailable"), "ecc_errors_uncorrected": missing("NVML unavailable")},
     None),
])
def test_ecc_counters_readable(fields: dict, ok) -> None:
    ctx = _ctx(CpuBackend())
    info.ecc_counters(ctx, 0, {"ecc_mode": have("enabled", "nvml"), **fields})
    found = ctx.out.build().checks_named("info.ecc_counters_readable")
    assert len(found) == 1 and found[0].ok is ok and found[0].device == 0, found


def test_info_emits_the_cards_generation_as_a_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    class Reader:
        name = "fake"

        def read(self, accel, index, known):
            return {"pcie_gen_card": have(5, "fake card"), "pcie_gen_max": have(4, "fake link"),
                    "ecc_errors_corrected": have(1, "fake"), "ecc_errors_uncorrected": have(0, "fake")}

        def close(self):
            pass

    monkeypatch.setitem(mgmt.READERS, "cpu", [Reader])
    env, code = cli.run(["info", "--profile", "quick", "--device", "cpu"])
    assert code == 0, env.errors
    card, link = env.metric("pcie_gen_card", device=0), env.metric("pcie_gen_max", device=0)
    assert (card.value, card.unit, link.value) == (5.0, "gen", 4.0)
    assert parse_compact(env).metric("pcie_gen_card", device=0).value == 5.0
    assert env.checks_named("info.ecc_counters_readable")[0].ok is True


def parse_compact(env):
    from cardeval_workloads.envelope import parse_envelope

    return parse_envelope(env.to_compact_json())


def test_host_reader_says_every_value_is_the_hosts(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text("vendor_id\t: GenuineIntel\nmodel name\t: Xeon Test\n")
    (proc / "meminfo").write_text("MemTotal:       1024 kB\n")
    edac = tmp_path / "edac"
    for mc, ce, ue in (("mc0", "2", "0"), ("mc1", "1", "0")):
        (edac / mc).mkdir(parents=True)
        (edac / mc / "ce_count").write_text(ce + "\n")
        (edac / mc / "ue_count").write_text(ue + "\n")
    out = HostReader(proc, tmp_path / "dmi", edac).read(None, 0, {})
    assert all("host" in f.source for f in out.values() if f.value is not None), out
    assert out["memory_total_bytes"].source.startswith("host RAM")
    assert (out["ecc_errors_corrected"].value, out["ecc_errors_uncorrected"].value) == ("3", "0")
    assert "not applicable" in out["pcie_gen_card"].unavailable
    (edac / "mc1" / "ue_count").write_text("garbage\n")
    out = HostReader(proc, tmp_path / "dmi", edac).read(None, 0, {})
    assert mgmt.was_refused(out["ecc_errors_uncorrected"]) and out["ecc_errors_corrected"].value == "3"
    none = HostReader(proc, tmp_path / "dmi", tmp_path / "no-edac").read(None, 0, {})
    assert none["ecc_errors_corrected"].value is None and not mgmt.was_refused(none["ecc_errors_corrected"])


# --- stress: all cards at once ------------------------------------------------------------------------


class FakeWorker:
    def __init__(self, index: int, prepare_s: float = 0.0, work_s: float = 0.3, fail: str | None = None) -> None:
        self.index, self.prepare_s, self.work_s, self.fail = index, prepare_s, work_s, fail
        self.prepared_at = self.began = self.ended = None
        self.args = None
        self.thread = None
        self.stopped = False

    def prepare(self) -> None:
        time.sleep(self.prepare_s)
        self.prepared_at = time.perf_counter()
        if self.fail == "prepare":
            raise RuntimeError("no memory")

    def work(self, start, deadline, stop) -> None:
        self.args, self.thread, self.began = (start, deadline), threading.get_ident(), time.perf_counter()
        try:
            if self.fail == "work":
                raise RuntimeError("device lost")
            while time.perf_counter() < deadline and not stop.is_set():
                time.sleep(0.01)
            self.stopped = stop.is_set()
        finally:
            self.ended = time.perf_counter()


def test_run_together_starts_every_card_at_one_moment() -> None:
    workers = [FakeWorker(0, 0.0), FakeWorker(1, 0.15), FakeWorker(2, 0.3), FakeWorker(3, fail="prepare"),
               FakeWorker(4, fail="work")]
    begun = []
    t0 = time.perf_counter()
    start, deadline, outcomes = stress.run_together(workers, 0.4, begin=lambda: begun.append(1) or time.perf_counter(),
                                                    poll_s=0.01)
    wall = time.perf_counter() - t0
    assert begun == [1] and deadline == pytest.approx(start + 0.4)
    ran = workers[:3]
    assert all(w.args == (start, deadline) for w in ran + [workers[4]])   # one start, one deadline
    assert start >= max(w.prepared_at for w in workers)                    # after every card prepared
    assert len({w.thread for w in ran}) == 3                               # a thread per card
    assert max(w.began for w in ran) < min(w.ended for w in ran)           # all loading at the same time
    assert wall < 0.3 + 3 * 0.4                                            # not one after the other
    assert outcomes[3].phase == "prepare" and "no memory" in str(outcomes[3].error) and workers[3].args is None
    assert outcomes[4].phase == "work" and "device lost" in str(outcomes[4].error)
    assert all(outcomes[w.index].error is None for w in ran)


def test_run_together_stops_every_card_when_the_run_is_ended() -> None:
    """SIGTERM's exception in the waiting thread stops all workers, waits for them, is re-raised."""

    class EndedError(Exception):
        pass

    def on_alarm(signum, frame):
        raise EndedError()

    workers = [FakeWorker(0, work_s=30), FakeWorker(1, work_s=30)]
    outcomes: dict = {}
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(EndedError):
            stress.run_together(workers, 30.0, poll_s=0.05, outcomes=outcomes)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # every worker saw the stop and had ended when the exception left run_together
    assert all(w.stopped and w.ended is not None for w in workers)
    assert all(outcomes[w.index].finished is not None for w in workers)


class TwoStandInCards(CpuBackend):
    """Two 'cards' that are the host CPU, to run the real stress load on two devices at once."""

    def count(self) -> int:
        return 2

    def describe(self, index: int) -> str:
        return f"stand-in:{index}"


def test_stress_loads_two_cards_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real_work = stress._Stress.work

    def spy(self, start, deadline, stop):
        t = time.perf_counter()
        real_work(self, start, deadline, stop)
        seen.append((self.index, start, deadline, t, time.perf_counter(), threading.get_ident()))

    monkeypatch.setattr(stress._Stress, "work", spy)
    params = {k: None for k in stress.PARAMS}
    params.update(duration_s=1.2, check_interval_s=0.3, size=64)
    ctx = _ctx(TwoStandInCards(), "stress", (0, 1), params, stress.PROFILES["quick"]["cpu"])
    stress.run(ctx)
    env = ctx.out.build()
    assert not ctx.failed, env.errors
    assert sorted(s[0] for s in seen) == [0, 1] and len({(s[1], s[2]) for s in seen}) == 1
    assert max(s[3] for s in seen) < min(s[4] for s in seen) and seen[0][5] != seen[1][5]
    for card in (0, 1):
        duration = env.metric("stress.duration_s", device=card)
        # The load lasted what was asked, and the figure is the span the load loop really ran (no
        # wall-clock bound: a busy machine may stretch the last chunk).
        ran = next(s[4] - s[1] for s in seen if s[0] == card)
        assert 1.2 * 0.95 <= duration.value <= ran + 0.25 and duration.labels["cards_at_once"] == "2"
        for name in ("stress.no_errors", "stress.results_correct", "stress.device_present"):
            c = [c for c in env.checks_named(name) if c.device == card]
            assert len(c) == 1 and c[0].ok is True, (name, c)
    assert {p.device for p in env.power} <= {0, 1}


# --- internode: transport and hosts -----------------------------------------------------------------


SOCKET_AFTER_IB_PROBE = """host:1:1 [0] NCCL INFO NET/IB : No device found.
host:1:1 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.1<0>
host:1:1 [0] NCCL INFO Using network Socket
host:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 8[0] [send] via NET/Socket/0
"""
ROCE = """host:1:1 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/RoCE [RO]; OOB eth0:10.0.0.1<0>
host:1:1 [0] NCCL INFO Using network IB
host:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 8[0] [receive] via NET/IB/0/GDRDMA
"""


def test_transport_is_read_from_what_the_connections_used() -> None:
    kind, what = internode.classify_transport(SOCKET_AFTER_IB_PROBE)
    assert kind == "tcp" and "Socket" in what  # "NET/IB : No device found" is no RDMA
    kind, what = internode.classify_transport(ROCE)
    assert kind == "rdma" and "RoCE" in what
    assert internode.classify_transport("NCCL INFO Using network IB\n")[0] == "rdma"
    assert internode.classify_transport("NCCL INFO Using network AWS Libfabric\n") == (
        "other", "Using network AWS Libfabric")
    assert internode.classify_transport("NCCL INFO comm 0x1 rank 0 nranks 2\n") == ("", "")


def test_transport_log_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nccl.a.1.log").write_text(ROCE)
    (tmp_path / "nccl.a.2.log").write_text(SOCKET_AFTER_IB_PROBE)
    monkeypatch.setenv("NCCL_DEBUG_FILE", str(tmp_path / "nccl.%h.%p.log"))
    assert internode._transport()[0] == "tcp"  # the weakest any process of the node used


@pytest.mark.parametrize("backend, reports, ok", [
    ("gloo", [("h1", "", ""), ("h2", "", "")], False),
    ("nccl", [("h1", "rdma", "NET/IB"), ("h2", "rdma", "NET/IB")], True),
    ("nccl", [("h1", "rdma", "NET/IB"), ("h2", "tcp", "NET/Socket")], False),
    ("nccl", [("h1", "rdma", "NET/IB"), ("h2", "", "")], None),   # a host that did not say
    ("nccl", [("h1", "other", "Using network X"), ("h2", "rdma", "NET/IB")], None),
    ("nccl", [("h1", "", ""), ("h2", "", "")], None),
])
def test_transport_judgement(backend: str, reports: list, ok) -> None:
    assert internode.judge_transport(backend, reports)[0] is ok


def test_host_identity_is_the_kernels_boot_id(tmp_path: Path) -> None:
    boot = tmp_path / "boot_id"
    boot.write_text("6b1d0c4e-0000-4000-8000-000000000001\n")
    assert internode.host_identity(str(boot)) == ("6b1d0c4e-0000-4000-8000-000000000001", "kernel boot_id")
    assert internode.host_identity(str(tmp_path / "none")) == (os.uname().nodename, "hostname")
    values = [{"host": "pod-a", "host_id": "k1", "host_id_kind": "kernel boot_id"},
              {"host": "pod-b", "host_id": "k1", "host_id_kind": "kernel boot_id"},  # two pods, one server
              None]
    n, labels = internode.count_hosts(values)
    assert n == 1 and labels["distinct_hostnames"] == "2" and labels["ranks"] == "2 of 3"
    values.append({"host": "pod-c", "host_id": "k2", "host_id_kind": "kernel boot_id"})
    assert internode.count_hosts(values)[0] == 2


# --- power-limit and power-load ---------------------------------------------------------------------


class ConstantSource(power.Source):
    """A card drawing a constant 33 W under a 30 W enforced limit: the same samples every run."""

    name = "constant"

    def __init__(self) -> None:
        super().__init__()
        self.power_reason = None

    def read(self) -> power.Reading:
        return power.Reading(time.perf_counter(), watts=33.0)

    def power_limit(self):
        return 30.0, "test limit"


@pytest.mark.parametrize("tolerance, ok", [(5.0, False), (15.0, True)])
def test_power_limit_tolerance_decides_on_the_same_samples(monkeypatch: pytest.MonkeyPatch, tolerance: float,
                                                            ok: bool) -> None:
    monkeypatch.setitem(power.SOURCES, "cpu", [lambda accel, index: ConstantSource()])
    env, code = cli.run(["power-limit", "--profile", "quick", "--device", "cpu", "--param", "duration_s=0.3",
                         "--param", "size=64", "--param", f"tolerance_pct={tolerance:g}"])
    assert code == 0, env.errors
    within = env.checks_named("power_limit.within_limit")[0]
    assert env.metric("power_limit.max_w").value == 33.0 and env.metric("power_limit.limit_w").value == 30.0
    assert within.ok is ok and f"+ {tolerance:g}%" in within.detail, within.detail


def test_power_load_correctness_per_level() -> None:
    ok, detail, observed = power_load.judge_correct([("20", 0), ("50", 0), ("full", 0)], 64, True, "ref ok",
                                                    True, "fresh ok")
    assert ok is True and observed == "none" and "20 correct, 50 correct, full correct" in detail
    ok, detail, observed = power_load.judge_correct([("20", 0), ("50", 3), ("full", 0)], 64, True, "ref ok",
                                                    True, "fresh ok")
    assert ok is False and observed == "50" and detail.startswith("wrong under level 50: 3 of 4096")
    ok, _, _ = power_load.judge_correct([("50", 0)], 64, True, "", False, "fresh wrong")
    assert ok is False


@pytest.mark.parametrize("level", ["50", "full"])
def test_power_load_names_the_level_that_computed_wrong(level: str) -> None:
    env, code = cli.run(["power-load", "--profile", "quick", "--device", "cpu", "--param", "levels=20,50",
                         "--param", "idle_s=0.2", "--param", "level_s=0.3", "--param", "size=64",
                         "--param", f"inject_level={level}"])
    assert code == 0, env.errors
    c = env.checks_named("power_load.computes_correctly")[0]
    assert c.ok is False and c.observed == level and f"level {level}:" in c.detail, c.detail
    assert "20 correct" in c.detail and "test hook" in c.detail
