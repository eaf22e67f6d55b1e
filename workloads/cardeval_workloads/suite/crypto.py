"""``crypto``: the card's SM2/SM3/SM4 against the standards' answers and the host's (6.4.b, 6.4.c).

8.5.2: prepare inputs, run the card's encryption, check the result is the
expected one; the same for decryption. 8.5.3: run the card's SM2/SM3/SM4 and
the same operations on the host CPU, the results must agree; and with the card's
encrypted link enabled, the traffic between host and card must not be
plaintext. The card's operations are the vendor's declared command
(:mod:`._vendor_crypto`, ``--param crypto_command``); the host's are kept
implementations (:mod:`._gm_crypto`). Inputs come from ``--param seed``.

* ``crypto.encrypt_matches_host`` — SM4-ECB of GM/T 0002's example block gives
  the standard's ciphertext, and SM4-CBC of ``bulk_kib`` KiB gives the host's
  ciphertext byte for byte.
* ``crypto.decrypt_matches_host`` — the card decrypts the example's ciphertext to
  its plaintext, and the host's CBC ciphertext to the original bytes.
* ``crypto.algorithms_match_host`` — the declared algorithms beside SM4: SM3 of
  GM/T 0004's two examples and of the bulk data equals the standard's and the
  host's digests; an SM2 signature made by the card verifies on the host, one
  made by the host verifies on the card, and the card rejects a tampered one.
* ``crypto.model_roundtrip`` — a model file (``--param model``; by default the
  ONNX model the repository ships) encrypted by the card (SM4-CBC, PKCS#7) is
  the host's ciphertext and not the plaintext, and decrypted by the card it is
  the same file (SHA-256).
* ``crypto.link_encrypted`` — ``--param link_command``, the vendor's method of
  8.5.3 d: with the encrypted link enabled it carries ``{input}`` to the card
  and back, and writes to ``{output}`` what it observed on the link as JSON,
  ``{"encrypted": true|false, "how": "..."}`` (plus ``"roundtrip"``: the bytes
  came back equal). Without one it is undetermined: attest it.
* Shown: ``crypto.sm4_card_mbps`` and ``crypto.sm4_host_mbps`` (SM4-CBC over the
  bulk data, the card's through its command: process start included).

On a card, a run whose command did not report a card (``{report}``) is not
evidence of it: every check is undetermined, with the reason. A command that
fails, times out or writes nothing leaves the checks it was for undetermined;
wrong bytes fail them.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param

from . import _foreign_model, _gm_crypto as gm
from ._vendor_crypto import COMMAND, LINK_COMMAND, CryptoFailed, VendorCrypto, execute, program

NAME = "crypto"
TOPOLOGY = "card"

CHECKS = ("crypto.encrypt_matches_host", "crypto.decrypt_matches_host", "crypto.algorithms_match_host",
          "crypto.model_roundtrip", "crypto.link_encrypted")
METRICS = ()
SHOWN = ("crypto.sm4_card_mbps", "crypto.sm4_host_mbps")
ALGORITHMS = ("SM2", "SM3", "SM4")


def _algorithms(text: str) -> tuple[str, ...]:
    names = tuple(a.strip().upper() for a in text.split(",") if a.strip())
    unknown = [a for a in names if a not in ALGORITHMS]
    if unknown or "SM4" not in names:
        raise ValueError(f"a comma list of {', '.join(ALGORITHMS)} that includes SM4 (8.5.2 encrypts); got {text!r}")
    return names


PARAMS = {
    "crypto_command": Param(COMMAND, None, "the vendor's tool: a JSON argv with {op}, {input}, {output} and as needed "
                            "{key}, {iv}, {signature}, {device}, {report} (see _vendor_crypto)"),
    "link_command": Param(LINK_COMMAND, None, "the vendor's check of the encrypted host-card link: a JSON argv with "
                          "{input} and {output}"),
    "algorithms": Param(_algorithms, ALGORITHMS, "the algorithms the card declares (SM4 at least)"),
    "model": Param(str, None, "the model file to encrypt and decrypt (default: the ONNX model the repository ships)"),
    "bulk_kib": Param(int, None, "KiB of data encrypted by the card and the host (default: the profile's)"),
    "seed": Param(int, 20240, "the seed of the inputs and keys"),
    "timeout_s": Param(float, 300.0, "how long one run of the vendor's tool may take"),
}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {"cpu": {"bulk_kib": 256}, "accelerator": {"bulk_kib": 1024}},
    "standard": {"cpu": {"bulk_kib": 4096}, "accelerator": {"bulk_kib": 16384}},
    "full": {"cpu": {"bulk_kib": 16384}, "accelerator": {"bulk_kib": 65536}},
}


def run(ctx: RunContext) -> None:
    ctx.per_device(lambda index: _card(ctx, index))


def _card(ctx: RunContext, index: int) -> None:
    out = ctx.out
    out.device(ctx.identity(index))
    command = ctx.params.get("crypto_command")
    if not command:
        why = "no crypto command is declared (spec.crypto.command): declare the vendor's tool, or attest the clause"
        for name in CHECKS:
            out.check(name, None, why, device=index)
        return
    rng = random.Random(int(ctx.params.get("seed", 20240)))
    bulk = rng.randbytes(1024 * int(ctx.params.get("bulk_kib") or ctx.sizes.get("bulk_kib") or 256))
    with tempfile.TemporaryDirectory(prefix="cardeval-crypto-") as tmp:
        card = VendorCrypto(list(command), Path(tmp), index, float(ctx.params.get("timeout_s", 300.0)))
        found = Checks(index)
        _sm4(card, rng, bulk, found)
        _others(card, rng, bulk, tuple(ctx.params.get("algorithms") or ALGORITHMS), found)
        _model(card, rng, Path(ctx.params.get("model") or _foreign_model.MODEL_FILE), found)
        link = _link(ctx.params.get("link_command"), Path(tmp), rng, float(ctx.params.get("timeout_s", 300.0)))
    where = f"{card.where()} on {ctx.accel.describe(index)}"
    if ctx.accel.is_accelerator and not card.on_card():
        why = (f"the vendor's tool did not report running on the card ({{report}}: {card.where()}): not evidence "
               "of the card's cryptography")
        for name in CHECKS:
            out.check(name, None, why, device=index)
        return
    for name in CHECKS[:-1]:
        ok, detail = found.result(name)
        out.check(name, ok, f"{detail} ({where})", device=index)
    out.check("crypto.link_encrypted", link[0], link[1], device=index)
    seconds = card.seconds.get("sm4-cbc-encrypt")
    if seconds:
        out.metric("crypto.sm4_card_mbps", len(bulk) / seconds / 1e6, "MB/s", device=index,
                   labels={"bytes": str(len(bulk)), "includes": "the tool's process start"})
    started = time.perf_counter()
    gm.sm4(bytes(16), bulk, encrypt=True, iv=bytes(16))
    out.metric("crypto.sm4_host_mbps", len(bulk) / (time.perf_counter() - started) / 1e6, "MB/s", device=index,
               labels={"bytes": str(len(bulk)), "implementation": "cryptography (OpenSSL)"})


class Checks:
    """What each check found: every comparison's outcome, the first failure's words, or why it is undetermined."""

    def __init__(self, device: int) -> None:
        self.device = device
        self.found: dict[str, list[tuple[bool, str]]] = {}
        self.undetermined: dict[str, str] = {}

    def compare(self, name: str, ok: bool, what: str) -> None:
        self.found.setdefault(name, []).append((ok, what))

    def cannot(self, name: str, why: str) -> None:
        self.undetermined.setdefault(name, why)

    def result(self, name: str) -> tuple[bool | None, str]:
        if name in self.undetermined:
            return None, self.undetermined[name]
        seen = self.found.get(name, [])
        if not seen:
            return None, "nothing was compared"
        bad = [what for ok, what in seen if not ok]
        if bad:
            return False, "; ".join(bad)
        return True, "; ".join(what for _, what in seen)


def _sm4(card: VendorCrypto, rng: random.Random, bulk: bytes, found: Checks) -> None:
    enc, dec = "crypto.encrypt_matches_host", "crypto.decrypt_matches_host"
    try:
        got = card.run("sm4-ecb-encrypt", gm.SM4_KAT_PLAIN, key=gm.SM4_KAT_KEY)
        found.compare(enc, got == gm.SM4_KAT_CIPHER, _said("SM4-ECB of GM/T 0002's example", got, gm.SM4_KAT_CIPHER))
        got = card.run("sm4-ecb-decrypt", gm.SM4_KAT_CIPHER, key=gm.SM4_KAT_KEY)
        found.compare(dec, got == gm.SM4_KAT_PLAIN, _said("SM4-ECB decryption of the example", got, gm.SM4_KAT_PLAIN))
        key, iv = rng.randbytes(16), rng.randbytes(16)
        host = gm.sm4(key, bulk, encrypt=True, iv=iv)
        got = card.run("sm4-cbc-encrypt", bulk, key=key, iv=iv)
        found.compare(enc, got == host, _said(f"SM4-CBC of {len(bulk)} bytes against the host's", got, host))
        got = card.run("sm4-cbc-decrypt", host, key=key, iv=iv)
        found.compare(dec, got == bulk, _said(f"SM4-CBC decryption of the host's {len(bulk)} bytes", got, bulk))
    except CryptoFailed as exc:
        found.cannot(enc, str(exc))
        found.cannot(dec, str(exc))


def _others(card: VendorCrypto, rng: random.Random, bulk: bytes, algorithms: tuple[str, ...], found: Checks) -> None:
    name = "crypto.algorithms_match_host"
    found.compare(name, True, f"declared: {', '.join(algorithms)}")
    try:
        if "SM3" in algorithms:
            cases = [(f"GM/T 0004's example {i}", m, d) for i, (m, d) in enumerate(gm.SM3_KATS, 1)]
            for what, message, digest in [*cases, (f"the host's, over {len(bulk)} bytes", bulk, gm.sm3(bulk))]:
                got = card.run("sm3", message)
                found.compare(name, got == digest, _said(f"SM3 against {what}", got, digest))
        if "SM2" in algorithms:
            key, message = gm.Sm2Key.generate(rng), rng.randbytes(256)
            signed = card.run("sm2-sign", message, key=key.private + key.public)
            verified = gm.sm2_verify(key.public, message, signed)
            found.compare(name, verified, f"the card's SM2 signature {'verifies' if verified else 'does not verify'} "
                                          "on the host")
            host_signed = gm.sm2_sign(key, message, rng)
            said = card.run("sm2-verify", message, key=key.public, signature=host_signed).strip()
            found.compare(name, said == b"valid", f"the host's SM2 signature: the card says {said[:16]!r}")
            tampered = bytes([host_signed[0] ^ 1]) + host_signed[1:]
            said = card.run("sm2-verify", message, key=key.public, signature=tampered).strip()
            found.compare(name, said == b"invalid", f"a tampered signature: the card says {said[:16]!r}")
    except CryptoFailed as exc:
        found.cannot(name, str(exc))


def _model(card: VendorCrypto, rng: random.Random, model: Path, found: Checks) -> None:
    name = "crypto.model_roundtrip"
    try:
        plain = model.read_bytes()
    except OSError as exc:
        found.cannot(name, f"the model file {model} cannot be read ({exc.strerror})")
        return
    key, iv = rng.randbytes(16), rng.randbytes(16)
    padded = gm.pad(plain)
    try:
        cipher = card.run("sm4-cbc-encrypt", padded, key=key, iv=iv)
        back = card.run("sm4-cbc-decrypt", cipher, key=key, iv=iv)
    except CryptoFailed as exc:
        found.cannot(name, str(exc))
        return
    host = gm.sm4(key, padded, encrypt=True, iv=iv)
    found.compare(name, cipher == host and cipher != padded,
                  f"{model.name} ({len(plain)} bytes) encrypted: "
                  + ("the host's ciphertext" if cipher == host else "not the host's ciphertext")
                  + ("" if cipher != padded else ", and equal to the plaintext"))
    try:
        restored = gm.unpad(back)
    except ValueError:
        restored = b""
    found.compare(name, restored == plain, f"decrypted: SHA-256 {gm.sha256(restored)[:16]}…, the file's "
                  f"{gm.sha256(plain)[:16]}…")


def _link(command: list[str] | None, workdir: Path, rng: random.Random, timeout_s: float) -> tuple[bool | None, str]:
    if not command:
        return None, ("no check of the encrypted host-card link is declared (spec.crypto.linkCommand): attest "
                      "8.5.3 d in spec.evidence")
    data, source, target = rng.randbytes(64 * 1024), workdir / "link.in", workdir / "link.out"
    source.write_bytes(data)
    argv = [a.replace("{input}", str(source)).replace("{output}", str(target)) for a in command]
    try:
        said = json.loads(execute(argv, workdir, timeout_s, target, what="the link check"))
    except CryptoFailed as exc:
        return None, str(exc)
    except ValueError as exc:
        return False, f"{program(command)} wrote no JSON verdict to {{output}} ({exc})"
    if not isinstance(said, dict) or not isinstance(said.get("encrypted"), bool):
        return False, f"{program(command)} wrote no boolean \"encrypted\" ({str(said)[:120]})"
    how = str(said.get("how") or "the vendor's method")[:300]
    if said.get("roundtrip") is False:
        return False, f"with the encrypted link on the data did not come back equal ({how})"
    return said["encrypted"], f"the link is {'' if said['encrypted'] else 'not '}encrypted: {how} ({program(command)})"


def _said(what: str, got: bytes, want: bytes) -> str:
    if got == want:
        return f"{what}: equal ({len(want)} bytes)"
    first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    return f"{what}: differs ({len(got)} bytes, {len(want)} expected; first difference at byte {first})"
