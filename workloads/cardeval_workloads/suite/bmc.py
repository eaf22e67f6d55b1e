"""``bmc``: the cards through the server's BMC (Redfish) against the OS's reading (6.1.b–e; 8.2.2–8.2.5), and the
server's fans as the cards heat (the stress methods' step f, 8.3.4.2 / 8.4.4.2).

The methods read each card's serial number, firmware version, current power
and current temperature through the server's remote management and through
the operating system, and compare: serial and firmware equal, power and
temperature within 5 %. The BMC side is :mod:`._redfish` (``--param
endpoint``, credentials from ``--param credentials_file`` — a JSON or YAML
file with ``username`` and ``password`` — or ``CARDEVAL_BMC_USERNAME`` /
``CARDEVAL_BMC_PASSWORD``; TLS verified, ``--param ca_file``, or ``--param
insecure=true``, recorded in every detail); the OS side is :mod:`._os_cards`.

Each OS card is matched to a BMC GPU by serial number, else UUID, else PCIe
address; a card the BMC does not list, or a BMC GPU no OS card matches, is a
mismatch.

* ``bmc.serial_equal`` (6.1.b) — every card matched by serial, each BMC GPU
  matched once, no GPU without a serial or with another's;
* ``bmc.firmware_equal`` (6.1.c) — every matched pair's firmware versions equal;
* ``bmc.power_paired`` / ``bmc.temperature_paired`` — every matched card read
  on both sides at every one of ``samples`` moments (the BMC, then the OS
  straight after: the gap is shown); ``bmc.power_deviation_pct`` /
  ``bmc.temperature_deviation_pct`` (6.1.d, 6.1.e) per card — the largest of
  the samples' \\|BMC − OS\\| / OS × 100 (every sample must be within the
  bound, so the largest is the statistic), each sample in ``stats.samples``.
  On a card, half the samples are taken while the card runs a matrix-multiply
  load, so the readings are compared idle and under load.
* ``bmc.fans_follow_temperature`` (read by the stress clauses 6.2.4.b and
  6.3.4.b for their step f, "the system fans' speed rises as the cards'
  temperature rises") — the BMC's fans (``ThermalSubsystem/Fans``, else
  ``Thermal``) and the OS's card temperatures sampled together every
  ``fan_interval_s``: a few samples idle, then ``heat_s`` seconds with every
  card under full load. The samples are split by the hottest card's
  temperature into the coolest and the hottest third of the range it covered;
  the fans must turn faster (percent of full speed where every fan reports it,
  else RPM) in the hottest third than in the coolest: ``bmc.fan_rise_pct``,
  with ``bmc.card_heat_c`` how far the cards heated. Cards that heated less
  than ``min_heat_c`` leave the check undetermined (nothing for fans to follow);
  a BMC that reports no fans too. The load is this workload's own, of
  ``heat_s``, not the 72 h stress run's: the credentials live in this one Job,
  and fans answer a card's heat within minutes. On the CPU stand-in nothing is
  loaded: the temperatures are whatever the OS command reports.

A BMC that cannot be reached, refuses the credentials or answers garbage
leaves every check undetermined with the reason (the catalog: ``Error``).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from typing import Any

import torch

from cardeval_workloads.envelope import Stats
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged

from . import _bmc_params, _os_cards, _redfish

NAME = "bmc"
TOPOLOGY = "node"

CHECKS = ("bmc.serial_equal", "bmc.firmware_equal", "bmc.power_paired", "bmc.temperature_paired",
          "bmc.fans_follow_temperature")
METRICS = ("bmc.power_deviation_pct", "bmc.temperature_deviation_pct")
SHOWN = ("bmc.fan_rise_pct", "bmc.card_heat_c")


PARAMS = {
    **_bmc_params.ACCESS,
    "samples": Param(int, None, "paired readings per card instead of the profile's"),
    "interval_s": Param(float, None, "seconds between paired readings instead of the profile's"),
    "os_command": Param(_os_cards.COMMAND, None, "a vendor command for the OS side: JSON argv with {index} "
                        "(see _os_cards)"),
    "cards": Param(int, None, "with os_command on the CPU: how many cards the command describes"),
    "heat_s": Param(float, None, "seconds of full load while the fans are watched instead of the profile's"),
    "fan_interval_s": Param(float, None, "seconds between fan readings instead of the profile's"),
    "min_heat_c": Param(float, 5.0, "°C the cards must heat for the fans to have something to follow"),
}

#: Fan readings before the load starts: the cool end of the range.
IDLE_FAN_SAMPLES = 3
PROFILES = {
    "quick": {"cpu": dict(samples=4, interval_s=0.5, heat_s=3.0, fan_interval_s=0.3),
              "accelerator": dict(samples=6, interval_s=1.0, heat_s=120.0, fan_interval_s=5.0)},
    "standard": {"cpu": dict(samples=10, interval_s=1.0, heat_s=10.0, fan_interval_s=1.0),
                 "accelerator": dict(samples=20, interval_s=2.0, heat_s=600.0, fan_interval_s=10.0)},
    "full": {"cpu": dict(samples=30, interval_s=2.0, heat_s=30.0, fan_interval_s=2.0),
             "accelerator": dict(samples=60, interval_s=5.0, heat_s=1800.0, fan_interval_s=15.0)},
}


def run(ctx: RunContext) -> None:
    client = _bmc_params.client(ctx)
    command = ctx.params.get("os_command")
    if command is None and not ctx.accel.is_accelerator:
        raise UsageError("on the CPU the OS side needs --param os_command (the host CPU is not a card)")
    indices = ctx.devices if ctx.accel.is_accelerator else list(range(int(ctx.params.get("cards") or 1)))
    reader = _os_cards.Reader(ctx.accel, command)
    for index in ctx.devices:  # on the CPU: the host, so that the result says it is the stand-in's
        ctx.out.device(ctx.identity(index))
    try:
        _compare(ctx, client, reader, indices)
    finally:
        reader.close()


def _undetermined(ctx: RunContext, why: str) -> None:
    for name in CHECKS:
        ctx.out.check(name, None, why)
    for name in METRICS:
        ctx.out.metric(name, None, "%", unavailable=why)


def _compare(ctx: RunContext, client: _redfish.Client, reader: _os_cards.Reader, indices: list[int]) -> None:
    try:
        client.login()
    except _redfish.RedfishError as exc:
        return _undetermined(ctx, f"the BMC could not be read: {exc}")
    try:
        bmc_gpus = _redfish.gpus(client)
        cards = [reader.card(i) for i in indices]
        where = f"{client.describe()}; OS side: {reader.describe()}"
        pairs = _match(ctx, cards, bmc_gpus, where)
        _firmware(ctx, pairs, where)
        _readings(ctx, client, reader, pairs, where)
        _fans_follow(ctx, client, reader, indices, where)
    except _redfish.RedfishError as exc:
        _undetermined(ctx, f"the BMC could not be read: {exc}")
    except RuntimeError as exc:
        _undetermined(ctx, f"the OS side could not be read: {exc}")
    finally:
        client.logout()


def _match(ctx: RunContext, cards: list[_os_cards.Card], gpus: list[_redfish.BmcGpu], where: str
           ) -> list[tuple[_os_cards.Card, _redfish.BmcGpu]]:
    """Pairs matched by serial, else UUID; the serial check judged on the whole inventory."""
    problems = []
    serials = [g.serial for g in gpus if g.serial]
    doubled = sorted({s for s in serials if serials.count(s) > 1})
    if doubled:
        problems.append(f"the BMC lists serial(s) {doubled} on more than one GPU")
    problems += [f"BMC GPU {g.id} has no serial number" for g in gpus if not g.serial]
    if not gpus:
        problems.append("the BMC lists no GPU or accelerator processor")
    pairs, taken = [], set()
    for card in cards:
        serial = card.identity["serial"]
        match, how = _find(card, [g for g in gpus if g.path not in taken])
        if match is None:
            problems.append(f"card {card.index} (serial {serial or 'unread: ' + card.why.get('serial', '?')}) is "
                            "not listed by the BMC")
            continue
        taken.add(match.path)
        pairs.append((card, match))
        if match.serial != serial:
            problems.append(f"card {card.index}: serial {serial!r} from the OS, {match.serial!r} from the BMC "
                            f"({match.id}, matched by {how})")
    problems += [f"BMC GPU {g.id} (serial {g.serial}) matches no card the OS sees" for g in gpus
                 if g.path not in taken]
    matched = ", ".join(f"card {c.index} = {g.id} (serial {c.identity['serial']})" for c, g in pairs)
    ctx.out.check("bmc.serial_equal", not problems,
                  ("; ".join(problems) if problems else f"every serial equal: {matched}") + f" ({where})",
                  observed=len(pairs) - len([p for p in problems if "matched by" in p]), expected=len(cards))
    return pairs


def _find(card: _os_cards.Card, gpus: list[_redfish.BmcGpu]) -> tuple[_redfish.BmcGpu | None, str]:
    """The BMC GPU that is ``card``, by serial number, else UUID, else PCIe address; and which one matched."""
    serial, uuid = card.identity["serial"], (card.identity["uuid"] or "").lower()
    address = _redfish.normal_pci_address(card.identity["pci_bus_id"])
    for how, key in (("serial", lambda g: serial and g.serial == serial),
                     ("UUID", lambda g: uuid and (g.uuid or "").lower() == uuid),
                     ("PCIe address", lambda g: address and g.pci_address == address)):
        found = [g for g in gpus if key(g)]
        if found:
            return found[0], how
    return None, ""


def _firmware(ctx: RunContext, pairs: list[tuple[_os_cards.Card, _redfish.BmcGpu]], where: str) -> None:
    if not pairs:
        ctx.out.check("bmc.firmware_equal", False, f"no card was matched to a BMC GPU ({where})")
        return
    parts, ok = [], True
    for card, gpu in pairs:
        mine, theirs = card.identity["firmware"], gpu.firmware
        same = mine is not None and theirs is not None and mine.strip() == theirs.strip()
        ok = ok and same
        parts.append(f"card {card.index}: OS {mine or 'unread: ' + card.why.get('firmware', '?')!s}, "
                     f"BMC {theirs or 'not reported'}{'' if same else ' DIFFERENT'}")
    ctx.out.check("bmc.firmware_equal", ok, "; ".join(parts) + f" ({where})")


class _Load:
    """A matrix-multiply loop on each card while it is set, so the readings are compared under load too."""

    def __init__(self, ctx: RunContext, indices: list[int]) -> None:
        self.ctx = ctx
        self.indices = indices
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> _Load:
        for index in self.indices:
            thread = threading.Thread(target=self._spin, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _spin(self, index: int) -> None:
        device = self.ctx.accel.device(index)
        a = torch.randn(4096, 4096, device=device, dtype=torch.float16)
        while not self.stop.is_set():
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            self.ctx.accel.synchronize(index)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def _readings(ctx: RunContext, client: _redfish.Client, reader: _os_cards.Reader,
              pairs: list[tuple[_os_cards.Card, _redfish.BmcGpu]], where: str) -> None:
    cfg = merged(ctx.sizes, ctx.params, "samples", "interval_s")
    samples, interval = int(cfg["samples"]), float(cfg["interval_s"])
    taken: dict[int, list[tuple[str, _redfish.BmcGpu, _os_cards.Sample, float]]] = {c.index: [] for c, _ in pairs}
    phases = [("idle", samples - samples // 2), ("load", samples // 2)] if ctx.accel.is_accelerator \
        else [("idle", samples)]
    for phase, count in phases:
        with _Load(ctx, [c.index for c, _ in pairs]) if phase == "load" else contextlib.nullcontext():
            if phase == "load":
                time.sleep(2.0)  # let the card's power rise before it is read
            for _ in range(count):
                for card, gpu in pairs:
                    start = time.time()
                    now = _redfish.read_gpu(client, gpu.path)
                    if now is None:
                        raise _redfish.RedfishError(f"{gpu.path} is no longer a GPU processor")
                    mine = reader.sample(card.index)
                    taken[card.index].append((phase, now, mine, mine.t - start))
                time.sleep(interval)
    no_load = "" if ctx.accel.is_accelerator else "; not under load: the CPU stand-in has no card to load"
    for quantity, unit in (("power", "W"), ("temperature", "°C")):
        _report(ctx, quantity, unit, pairs, taken, f"{where}{no_load}")


def _report(ctx: RunContext, quantity: str, unit: str, pairs: list[tuple[_os_cards.Card, _redfish.BmcGpu]],
            taken: dict[int, list[Any]], where: str) -> None:
    attr = "power_w" if quantity == "power" else "temperature_c"
    missing, details = [], []
    for card, gpu in pairs:
        deviations, shown, gaps = [], [], []
        for phase, now, mine, gap in taken[card.index]:
            gaps.append(gap)
            theirs, ours = getattr(now, attr), getattr(mine, attr)
            if theirs is None or ours is None or ours == 0:
                missing.append(f"card {card.index} ({phase}): BMC {theirs}, OS {ours}")
                continue
            deviations.append(abs(theirs - ours) / abs(ours) * 100)
            shown.append(f"{theirs:g}/{ours:g}")
        if deviations:
            ctx.out.metric(f"bmc.{quantity}_deviation_pct", max(deviations), "%", device=card.index,
                           stats=Stats.of(deviations),
                           labels={"bmc_gpu": gpu.id, "pairs": " ".join(shown)[:200],
                                   "read_gap_s": f"{max(gaps):.3f}",
                                   "statistic": "the largest |BMC - OS| / OS of the samples"})
        else:
            ctx.out.metric(f"bmc.{quantity}_deviation_pct", None, "%", device=card.index,
                           unavailable=f"no {quantity} read on both sides for card {card.index}")
        details.append(f"card {card.index} = {gpu.id}: {len(deviations)} pairs (BMC/OS {unit})")
    if not pairs:
        ctx.out.check(f"bmc.{quantity}_paired", None, f"no card was matched to a BMC GPU ({where})")
        return
    ctx.out.check(f"bmc.{quantity}_paired", None if missing else True,
                  ("; ".join(missing[:4]) + " (not read)" if missing else "; ".join(details))
                  + f" ({where})")


def _fan_speed(fans: list[_redfish.Fan]) -> tuple[float, str] | None:
    """The fans' mean speed: in percent of full speed where every fan reports it, else in RPM where every fan
    reports that (None: the BMC gives no comparable speed)."""
    if fans and all(f.percent is not None for f in fans):
        return statistics.fmean(f.percent for f in fans if f.percent is not None), "%"
    if fans and all(f.rpm is not None for f in fans):
        return statistics.fmean(f.rpm for f in fans if f.rpm is not None), "RPM"
    return None


def _fans_follow(ctx: RunContext, client: _redfish.Client, reader: _os_cards.Reader, indices: list[int],
                 where: str) -> None:
    """Step f of the stress methods: the fans sampled with the hottest card's temperature, idle then loaded."""
    cfg = merged(ctx.sizes, ctx.params, "heat_s", "fan_interval_s")
    heat_s, interval, min_heat = float(cfg["heat_s"]), float(cfg["fan_interval_s"]), float(ctx.params["min_heat_c"])
    samples: list[tuple[float, float, str, int]] = []  # (hottest card °C, fan speed, unit, fans)
    unread: list[str] = []

    def sample() -> None:
        fans = _redfish.fans(client)
        speed = _fan_speed(fans)
        temperatures = [t for t in (reader.sample(i).temperature_c for i in indices) if t is not None]
        if speed is None or not temperatures:
            unread.append("no comparable fan speed from the BMC" if speed is None else "no card temperature")
            return
        samples.append((max(temperatures), speed[0], speed[1], len(fans)))

    for _ in range(IDLE_FAN_SAMPLES):
        sample()
        time.sleep(interval)
    with _Load(ctx, indices) if ctx.accel.is_accelerator else contextlib.nullcontext():
        end = time.monotonic() + heat_s
        while time.monotonic() < end:
            sample()
            time.sleep(interval)
    load = f"{heat_s:g} s of full load on {len(indices)} card(s)" if ctx.accel.is_accelerator else (
        f"{heat_s:g} s, no load: the CPU stand-in has no card to heat, the temperatures are the OS command's")
    units = {unit for _, _, unit, _ in samples}
    if unread or len(samples) < IDLE_FAN_SAMPLES + 2 or len(units) > 1:
        why = unread[0] if unread else ("fans reported in percent and in RPM in turn" if len(units) > 1
                                        else f"only {len(samples)} samples")
        ctx.out.check("bmc.fans_follow_temperature", None, f"fans against card temperature not read: {why} ({where})")
        for name in SHOWN:
            ctx.out.metric(name, None, "%" if name == "bmc.fan_rise_pct" else "°C", unavailable=why)
        return
    temperatures = [t for t, _, _, _ in samples]
    coolest, hottest = min(temperatures), max(temperatures)
    heat = hottest - coolest
    third = heat / 3
    cool = [f for t, f, _, _ in samples if t <= coolest + third]
    hot = [f for t, f, _, _ in samples if t >= hottest - third]
    unit, count = samples[0][2], samples[0][3]
    cool_speed, hot_speed = statistics.fmean(cool), statistics.fmean(hot)
    rise = (hot_speed - cool_speed) / cool_speed * 100 if cool_speed else (100.0 if hot_speed > 0 else 0.0)
    ctx.out.metric("bmc.card_heat_c", heat, "°C", labels={"from_c": f"{coolest:g}", "to_c": f"{hottest:g}"})
    ctx.out.metric("bmc.fan_rise_pct", rise, "%", stats=Stats.of([f for _, f, _, _ in samples]),
                   labels={"fans": str(count), "speed_unit": unit, "statistic":
                           "mean fan speed in the hottest third of the temperature range against the coolest"})
    seen = (f"{count} fans at {cool_speed:.4g} {unit} with the hottest card at {coolest:g}–{coolest + third:.3g} °C, "
            f"{hot_speed:.4g} {unit} at {hottest - third:.3g}–{hottest:g} °C ({rise:+.3g} %); {len(samples)} samples "
            f"every {interval:g} s over {IDLE_FAN_SAMPLES} idle and {load}")
    if heat < min_heat:
        ctx.out.check("bmc.fans_follow_temperature", None, f"the cards heated only {heat:.3g} °C (under "
                      f"min_heat_c {min_heat:g}): nothing for the fans to follow; {seen} ({where})")
        return
    ctx.out.check("bmc.fans_follow_temperature", hot_speed > cool_speed,
                  ("the fans sped up as the cards heated: " if hot_speed > cool_speed else
                   "the fans did NOT speed up as the cards heated: ") + f"{seen} ({where})")
