"""A card-management command for a machine without cards: prints card INDEX of a JSON state file as the OS sees it.

    python os_cards_cli.py STATE INDEX

STATE is a JSON list of cards (serial, firmware, uuid, pci_bus_id, power_w, temperature_c); a test rewrites it
while a run reads it, as a card's readings change. An index past the list exits 3, as an SMI tool does.
"""

from __future__ import annotations

import json
import sys

cards = json.loads(open(sys.argv[1]).read())
index = int(sys.argv[2])
if index >= len(cards):
    print(f"no card {index}", file=sys.stderr)
    sys.exit(3)
print(json.dumps(cards[index]))
