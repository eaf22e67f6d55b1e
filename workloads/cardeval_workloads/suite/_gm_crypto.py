"""The host's SM2/SM3/SM4 (GM/T 0003/0004/0002), and the standards' known answers: what the card is compared with.

Kept implementations, not ours: SM4 and SM3 from the ``cryptography`` package
(OpenSSL's), SM2 from ``gmssl`` (signatures over SM3 with the user ID of GM/T
0009, ``1234567812345678``). The known answers are the standards' own examples:
GM/T 0002-2012 Appendix A (one SM4 block), GM/T 0004-2012 Appendix A ("abc",
and "abcd" sixteen times). Inputs are made from a seed, so two runs compare the
same bytes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: GM/T 0002-2012 Appendix A, example 1: one block, the key equal to the plaintext.
SM4_KAT_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
SM4_KAT_PLAIN = SM4_KAT_KEY
SM4_KAT_CIPHER = bytes.fromhex("681edf34d206965e86b3e94f536e4246")
#: GM/T 0004-2012 Appendix A, examples 1 and 2.
SM3_KATS = (
    (b"abc", bytes.fromhex("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")),
    (b"abcd" * 16, bytes.fromhex("debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732")),
)
#: GM/T 0009's default signer ID, which the SM2 signatures here use.
SM2_USER_ID = "1234567812345678"
BLOCK = 16


def sm4(key: bytes, data: bytes, *, encrypt: bool, iv: bytes | None = None) -> bytes:
    """SM4 in ECB (``iv`` None) or CBC mode, no padding: ``data`` is whole blocks."""
    mode = modes.CBC(iv) if iv is not None else modes.ECB()
    cipher = Cipher(algorithms.SM4(key), mode)
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def pad(data: bytes) -> bytes:
    """PKCS#7 to whole SM4 blocks (a model file is rarely a multiple of 16 bytes)."""
    n = BLOCK - len(data) % BLOCK
    return data + bytes([n]) * n


def unpad(data: bytes) -> bytes:
    n = data[-1] if data else 0
    if not 1 <= n <= BLOCK or data[-n:] != bytes([n]) * n:
        raise ValueError("not PKCS#7 padded")
    return data[:-n]


@dataclass(frozen=True)
class Sm2Key:
    private: bytes  # 32 bytes
    public: bytes   # 64 bytes: x || y

    @classmethod
    def generate(cls, rng: random.Random) -> Sm2Key:
        from gmssl import sm2

        n = int(sm2.default_ecc_table["n"], 16)
        d = rng.randrange(1, n - 1)
        signer = sm2.CryptSM2(private_key=f"{d:064x}", public_key="")
        public = signer._kg(d, sm2.default_ecc_table["g"])
        return cls(bytes.fromhex(f"{d:064x}"), bytes.fromhex(public))


def sm2_sign(key: Sm2Key, message: bytes, rng: random.Random) -> bytes:
    """An SM2 signature (r || s, 64 bytes) of ``e = SM3(Z_A || M)``, Z_A over :data:`SM2_USER_ID`."""
    from gmssl import sm2

    signer = sm2.CryptSM2(private_key=key.private.hex(), public_key=key.public.hex())
    n = int(sm2.default_ecc_table["n"], 16)
    while True:  # gmssl returns None for the rare k that gives r = 0 or s = 0: another k
        signature = signer.sign(bytes.fromhex(signer._sm3_z(message)), f"{rng.randrange(1, n - 1):064x}")
        if signature:
            return bytes.fromhex(signature)


def sm2_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    from gmssl import sm2

    if len(signature) != 64:
        return False
    verifier = sm2.CryptSM2(private_key="", public_key=public.hex())
    return bool(verifier.verify_with_sm3(signature.hex(), message))


def seeded_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
