"""The card's cryptography as its vendor declares it: a command, run once per operation (8.5.2 c–f, 8.5.3 c).

The command is an argument list (never a shell line) with placeholders the
workload fills in, files all of them, raw bytes:

* ``{op}``: ``sm4-ecb-encrypt``, ``sm4-ecb-decrypt``, ``sm4-cbc-encrypt``,
  ``sm4-cbc-decrypt`` (no padding: whole 16-byte blocks), ``sm3``, ``sm2-sign``,
  ``sm2-verify``;
* ``{input}`` the data; ``{output}`` where the command writes the result (the
  ciphertext or plaintext, the 32-byte digest, the 64-byte signature r || s, or
  the text ``valid`` / ``invalid``);
* ``{key}`` the SM4 key (16 bytes), the SM2 private key followed by its public
  key (32 + 64 bytes) for signing, the public key (64 bytes, x || y) for
  verifying; ``{iv}`` the CBC IV (16 bytes); ``{signature}`` the signature to
  verify;
* optionally ``{device}`` the card's index, and ``{report}``, a JSON file where
  it says where it ran: ``{"device": "...", "engine": "..."}``.

On a card evaluation a run whose report is missing or names the CPU is not
evidence of the card (the caller leaves its checks undetermined). A command that
is not found, fails, times out or writes no output raises :class:`CryptoFailed`
with its exit status and its output's tail: the checks it was for are
undetermined, and the catalog makes that an ``Error``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardeval_workloads.harness.params import argv_with

from . import _vendor_tool
from ._vendor_tool import program

REQUIRED = ("{op}", "{input}", "{output}")
OPS = ("sm4-ecb-encrypt", "sm4-ecb-decrypt", "sm4-cbc-encrypt", "sm4-cbc-decrypt", "sm3", "sm2-sign", "sm2-verify")
#: ``--param crypto_command``'s parser (and ``link_command``'s: it needs {input} and {output}).
COMMAND = argv_with(*REQUIRED)
LINK_COMMAND = argv_with("{input}", "{output}")


class CryptoFailed(RuntimeError):
    """The command produced no result: why, with its output's tail."""


@dataclass
class VendorCrypto:
    """Runs the declared command; remembers what each run reported about where it ran."""

    command: list[str]
    workdir: Path
    device: int
    timeout_s: float
    reports: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, op: str, data: bytes, *, key: bytes | None = None, iv: bytes | None = None,
            signature: bytes | None = None) -> bytes:
        files = {"{input}": data, "{key}": key, "{iv}": iv, "{signature}": signature}
        paths = {name: self.workdir / f"{op}.{name.strip('{}')}" for name in files}
        paths["{output}"] = self.workdir / f"{op}.out"
        paths["{report}"] = self.workdir / f"{op}.report.json"
        for name, content in files.items():
            if content is not None:
                paths[name].write_bytes(content)
        for stale in (paths["{output}"], paths["{report}"]):
            stale.unlink(missing_ok=True)
        values = {**{k: str(v) for k, v in paths.items()}, "{op}": op, "{device}": str(self.device)}
        argv = [_filled(a, values) for a in self.command]
        started = time.perf_counter()
        output = execute(argv, self.workdir, self.timeout_s, paths["{output}"], what=op)
        self.seconds[op] = self.seconds.get(op, 0.0) + time.perf_counter() - started
        self.reports.append(_report(program(argv), paths["{report}"]))
        return output

    def on_card(self) -> bool:
        """Every run reported a device, and none the host's CPU."""
        return bool(self.reports) and all(_names_card(r.get("device")) for r in self.reports)

    def where(self) -> str:
        devices = sorted({str(r.get("device")) for r in self.reports if r.get("device") is not None})
        engines = sorted({str(r.get("engine")) for r in self.reports if r.get("engine")})
        said = f"device {', '.join(devices)}" if devices else "no device reported"
        return f"{program(self.command)} ({said}{'; ' + ', '.join(engines) if engines else ''})"


def execute(argv: list[str], cwd: Path, timeout_s: float, output: Path, *, what: str) -> bytes:
    """Run the tool to success and read what it wrote to ``output``."""
    _vendor_tool.run(argv, cwd, timeout_s, what=what, error=CryptoFailed)
    try:
        return output.read_bytes()
    except OSError as exc:
        raise CryptoFailed(f"{program(argv)} ({what}) wrote no {{output}} ({exc.strerror})") from None


def _report(tool: str, path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CryptoFailed(f"{tool} wrote an unreadable {{report}} ({exc})") from None
    return loaded if isinstance(loaded, dict) else {}


def _names_card(device: Any) -> bool:
    return device is not None and str(device).strip().lower() not in ("", "cpu", "host")


def _filled(argument: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        argument = argument.replace(placeholder, value)
    return argument
