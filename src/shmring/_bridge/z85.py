"""Z85 (ZeroMQ RFC 32), the text form of CURVE keys, in plain Python: key
files are read and checked without pyzmq."""

from __future__ import annotations

ALPHABET = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def decode(text: bytes) -> bytes | None:
    """The bytes ``text`` encodes, or None if it is not z85 (a length not a
    multiple of 5, a character outside the alphabet, a group over 2**32)."""
    if len(text) % 5:
        return None
    out = bytearray()
    for i in range(0, len(text), 5):
        value = 0
        for c in text[i:i + 5]:
            digit = _INDEX.get(c)
            if digit is None:
                return None
            value = value * 85 + digit
        if value >= 1 << 32:
            return None
        out += value.to_bytes(4, "big")
    return bytes(out)


def encode(raw: bytes) -> bytes:
    """``raw`` (a multiple of 4 bytes long) in z85."""
    if len(raw) % 4:
        raise ValueError(f"z85 encodes a multiple of 4 bytes, not {len(raw)}")
    out = bytearray()
    for i in range(0, len(raw), 4):
        value = int.from_bytes(raw[i:i + 4], "big")
        out += bytes(ALPHABET[value // 85 ** k % 85] for k in range(4, -1, -1))
    return bytes(out)
