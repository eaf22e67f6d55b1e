"""A vendor's crypto tool, standing in for a card's: the command interface of ``spec.crypto`` on the host.

``python -m cardeval_testbed.crypto_tool --op {op} --input {input} --output {output} --key {key} --iv {iv}
--signature {signature} --report {report}`` runs the operation with the host's kept implementations and
reports ``{"device": "cpu", ...}`` — honestly the host, so that on a card evaluation it is never taken for
the card. ``--fault`` makes it misbehave the ways a real tool does, for the tests:

* ``garbage``: writes random bytes of the right length (wrong ciphertext, digest, signature);
* ``short``: writes half the result;
* ``exit``: fails with status 2 and a message on stderr;
* ``silent``: exits 0 and writes nothing;
* ``says-card``: reports a card (``{"device": "accel-0"}``) while running on the host (only for tests that
  check the card path is judged on the report).

``--link`` turns it into the link check of 8.5.3 d: it writes ``{"encrypted": ..., "how": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from cardeval_workloads.suite import _gm_crypto as gm


def _op(op: str, data: bytes, key: bytes, iv: bytes, signature: bytes) -> bytes:
    if op.startswith("sm4-"):
        _, mode, direction = op.split("-")
        return gm.sm4(key, data, encrypt=direction == "encrypt", iv=iv if mode == "cbc" else None)
    if op == "sm3":
        return gm.sm3(data)
    if op == "sm2-sign":
        return gm.sm2_sign(gm.Sm2Key(key[:32], key[32:96]), data, random.Random(os.urandom(16)))
    if op == "sm2-verify":
        return b"valid" if gm.sm2_verify(key[:64], data, signature) else b"invalid"
    raise SystemExit(f"crypto_tool: unknown op {op!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crypto_tool")
    parser.add_argument("--op", default="")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--key")
    parser.add_argument("--iv")
    parser.add_argument("--signature")
    parser.add_argument("--report")
    parser.add_argument("--fault", choices=("garbage", "short", "exit", "silent", "says-card"))
    parser.add_argument("--link", choices=("encrypted", "plaintext"))
    args = parser.parse_args(argv)
    if args.link:
        Path(args.output).write_text(json.dumps({
            "encrypted": args.link == "encrypted", "roundtrip": True,
            "how": f"stand-in link check: the {Path(args.input).stat().st_size} bytes were sent "
                   f"{'SM4-encrypted' if args.link == 'encrypted' else 'in the clear'}"}))
        return 0
    if args.fault == "exit":
        print("crypto_tool: the card's crypto engine is not available", file=sys.stderr)
        return 2
    if args.fault == "silent":
        return 0

    def read(path: str | None) -> bytes:
        return Path(path).read_bytes() if path and Path(path).exists() else b""

    result = _op(args.op, read(args.input), read(args.key), read(args.iv), read(args.signature))
    if args.fault == "garbage":
        result = os.urandom(len(result)) if not args.op == "sm2-verify" else b"valid"
    elif args.fault == "short":
        result = result[: len(result) // 2]
    Path(args.output).write_bytes(result)
    if args.report:
        device = "accel-0" if args.fault == "says-card" else "cpu"
        Path(args.report).write_text(json.dumps({"device": device, "engine": "cryptography (OpenSSL) + gmssl"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
