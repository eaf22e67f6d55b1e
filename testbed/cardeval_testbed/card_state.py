"""Cards for a machine without cards: their true state, read by a card-management command from a file and by the
test Redfish service (:mod:`.redfish`) from memory, so the OS and the BMC see the same cards change over time.

The command is ``tests/workloads/os_cards_cli.py STATE INDEX``; :meth:`CardState.write` replaces the file
atomically, as the command may read it at any moment.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import redfish


class CardState:
    def __init__(self, path: Path, count: int = 2, serial_prefix: str = "16549220086",
                 uuid_prefix: str = "GPU-3f1c2a55") -> None:
        self.path = path
        self.cards: list[dict[str, Any]] = [
            {"serial": f"{serial_prefix}{i:02d}", "firmware": "96.00.AF.00.01", "uuid": f"{uuid_prefix}-{i:04d}",
             "pci_bus_id": f"0000:{0x18 + i:02x}:00.0", "power_w": 70.0 + 10 * i, "temperature_c": 35.0 + i}
            for i in range(count)]
        #: The BMC's power reading over the OS's (1.0: they agree).
        self.bmc_power_factor = 1.02
        self.write()

    def write(self) -> None:
        scratch = self.path.with_suffix(".new")
        scratch.write_text(json.dumps(self.cards))
        scratch.replace(self.path)

    def gpus(self) -> list[redfish.Gpu]:
        """The cards as the Redfish service serves them, their readings live."""
        return [redfish.Gpu(c["serial"], c["firmware"], c["uuid"], pci_bus_id=c["pci_bus_id"],
                            power_w=lambda c=c: c["power_w"] * self.bmc_power_factor,
                            temperature_c=lambda c=c: c["temperature_c"]) for c in self.cards]

    @contextlib.contextmanager
    def heating(self, server: redfish.RedfishServer, c_per_step: float = 1.0,
                fans_follow: bool = True) -> Iterator[None]:
        """From the first look at the server's fans (where the bmc workload's fan step starts its load) the cards
        warm by ``c_per_step`` °C every 50 ms (to 90 °C) while it lasts; the fans follow them, or stay put."""
        stop = threading.Event()
        start = self.cards[0]["temperature_c"]
        server.fan_percent = lambda: 30.0 + (2.0 * (self.cards[0]["temperature_c"] - start) if fans_follow else 0.0)

        def warm() -> None:
            while not any("/Chassis/BMC_0" in path for _, path in list(server.requests)):
                if stop.wait(0.02):
                    return
            while not stop.wait(0.05):
                for card in self.cards:
                    card["temperature_c"] = min(card["temperature_c"] + c_per_step, 90.0)
                self.write()

        thread = threading.Thread(target=warm, name="heating", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
