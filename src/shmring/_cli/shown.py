"""How ``shmring cat`` shows one journal record: decoded when it is an object
that ``send_obj``/``append_obj`` wrote, bytes shown safely otherwise.

A record is one of:

- ``object``: a value record (first byte ``0x01``, the C value codec), which
  is decoded: the codec builds only plain values (None, bool, int, float,
  str, bytes, tuple, list, dict) and checks every byte, so decoding a
  hostile record runs no code and at worst says it is not a value;
- ``pickle``: a pickled object (first byte ``0x80``, or the framed format
  ``0x00 SRF`` with out-of-band buffers). Unpickling runs whatever code the
  bytes name, so it is done only when asked (``--unpickle``, for journals
  you trust); otherwise it is shown as bytes with its kind;
- ``bytes``: anything else (and a value or pickle record that does not
  decode), shown as a Python bytes literal, which escapes every byte that
  is not printable ASCII, so nothing in a record can drive the terminal.

``--json`` writes one object per line (JSON Lines) with the raw bytes in
base64, always, so a script gets the record exactly; decoded values are
mapped onto JSON as far as JSON goes (bytes as ``{"$bytes": base64}``,
tuples as lists, a dict with keys that are not all strings as
``{"$items": [[key, value], ...]}``, a float that JSON cannot hold as
``{"$float": "nan"}``).
"""

from __future__ import annotations

import base64
import contextlib
import math
from dataclasses import dataclass
from typing import Any

from .. import _core
from .._errors import DecodeError
from .._journal import decode_obj
from .._objects.frame import FRAME_MAGIC, VALUE_TAG

_PICKLE_PROTO = 0x80


@dataclass
class Shown:
    """One record as ``cat`` shows it."""

    kind: str  # "object", "pickle" or "bytes"
    data: bytes
    value: Any = None
    decoded: bool = False
    error: str = ""


def classify(data: bytes, *, unpickle: bool = False) -> Shown:
    """Decode ``data`` when it is a value record (or, with ``unpickle``, a
    pickle); say what it is otherwise."""
    head = data[:1]
    if head and head[0] == VALUE_TAG:
        try:
            return Shown("object", data, _core.decode_value(data), decoded=True)
        except DecodeError:
            return Shown("bytes", data)
    is_pickle = (head and head[0] == _PICKLE_PROTO) or data[:4] == FRAME_MAGIC
    if not is_pickle:
        return Shown("bytes", data)
    if not unpickle:
        return Shown("pickle", data)
    try:
        value = decode_obj(data)  # what Reader.objects() does: pickle.loads
    except Exception as e:  # any error of a foreign pickle: say it, go on
        return Shown("pickle", data, error=f"{type(e).__name__}: {e}")
    return Shown("pickle", data, value, decoded=True)


def _cut(text: str, width: int) -> str:
    if width and len(text) > width:
        return text[:max(width - 3, 1)] + "..."
    return text


def text_line(seq: int, shown: Shown, width: int) -> str:
    """One line of ``cat``'s table: the sequence number, size, kind, content."""
    n = len(shown.data)
    if shown.decoded:
        body = _cut(repr(shown.value), width)
        kind = "obj" if shown.kind == "object" else "pickle"
    elif shown.kind == "pickle":
        why = f" ({shown.error})" if shown.error else ", --unpickle decodes it"
        body = _cut(f"<pickled object{why}> {shown.data!r}", width)
        kind = "pickle"
    else:
        body = _cut(repr(shown.data), width)
        kind = "bytes"
    return f"{seq}\t{n}\t{kind}\t{body}"


def to_json(value: Any) -> Any:
    """``value`` (a decoded plain value, or anything unpickled) as JSON can
    hold it; what it cannot becomes a tagged object, or its ``repr``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: to_json(v) for k, v in value.items()}
        return {"$items": [[to_json(k), to_json(v)] for k, v in value.items()]}
    return {"$repr": repr(value)}


def json_record(seq: int, shown: Shown) -> dict[str, Any]:
    """One line of ``cat --json``: seq, size, kind, the bytes in base64, and
    the decoded value (or the UTF-8 text of a bytes record) when there is one."""
    out: dict[str, Any] = {"seq": seq, "size": len(shown.data), "kind": shown.kind,
                           "base64": base64.b64encode(shown.data).decode()}
    if shown.decoded:
        out["value"] = to_json(shown.value)
    elif shown.kind == "bytes":
        with contextlib.suppress(UnicodeDecodeError):
            out["text"] = shown.data.decode("utf-8")
    if shown.error:
        out["error"] = shown.error
    return out
