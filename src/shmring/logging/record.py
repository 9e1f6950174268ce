"""The wire of :mod:`shmring.logging`: the channel a record travels on and
the record itself, a plain tuple through the value codec (never pickle)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from .. import _core
from .._errors import (
    DecodeError,
    InvalidArgument,
)

#: The channel name :class:`Handler` and :class:`Sink` use by default.
DEFAULT_CHANNEL = "logsink"

# One record is the value-codec encoding of this tuple (no pickle):
#   (WIRE_VERSION, kind, created, levelno, levelname, name, msg, pid,
#    processName, threadName, pathname, lineno, funcName, exc_text,
#    stack_info, dropped)
# kind RECORD is a log record; kind NOTE carries only ``dropped`` (a handler
# closing with drops it could not report in a record).
WIRE_VERSION = 1
RECORD, NOTE = 0, 1
_FIELDS = 16
_STR_FIELDS = (4, 5, 6, 8, 9, 10, 12)
_OPT_STR_FIELDS = (13, 14)
_TRUNCATED = " [... truncated]"

#: The logger name of the lines the sink writes about drops.
SINK_LOGGER = "shmring.logsink"


def _text(s: object) -> object:
    # The value codec refuses lone surrogates; a log line keeps them escaped.
    if isinstance(s, str):
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def encode_record(record: logging.LogRecord, *, dropped: int = 0,
                  limit: int | None = None) -> bytes:
    """Encode ``record`` for the wire: its formatted message (``getMessage()``),
    never its ``args``. ``record.exc_text`` must already be set if the record
    has an exception (:class:`Handler` formats it). ``limit`` (bytes) cuts the
    message and the traceback so that the encoding fits."""
    exc, stack = record.exc_text, record.stack_info
    fields: tuple[Any, ...] = (WIRE_VERSION, RECORD, float(record.created), int(record.levelno),
              str(record.levelname), str(record.name), record.getMessage(),
              int(record.process or 0), str(record.processName), str(record.threadName),
              str(record.pathname), int(record.lineno), str(record.funcName),
              None if exc is None else str(exc), None if stack is None else str(stack),
              int(dropped))
    data = _core.encode_value(fields)
    if data is None:
        fields = tuple(_text(f) for f in fields)
        data = _encode(fields)
    if limit is not None and len(data) > limit:
        # Each of the three long texts gets an equal share (UTF-8: <= 4 bytes a char).
        keep = max(0, (limit - 512) // 12)
        cut = list(fields)
        for i in (6, 13, 14):
            f = cut[i]
            if isinstance(f, str) and len(f) > keep:
                cut[i] = f[:keep] + _TRUNCATED
        data = _encode(tuple(cut))
    return data


def _encode(fields: tuple[Any, ...]) -> bytes:
    data = _core.encode_value(fields)
    if data is None:  # cannot happen for the types above; never fall back to pickle
        raise InvalidArgument("log record fields are not plain values")
    return data


def _note(dropped: int) -> bytes:
    return _encode((WIRE_VERSION, NOTE, time.time(), logging.WARNING, "WARNING", SINK_LOGGER,
                    "", os.getpid(), "", "", "", 0, "", None, None, dropped))


def decode_record(data: Any) -> tuple[logging.LogRecord | None, int, int]:
    """Decode one wire record: ``(record or None for a note, dropped, pid)``.
    Uses the value decoder only (no pickle); anything else raises
    :class:`~shmring.DecodeError`."""
    t = _core.decode_value(data)
    if (not isinstance(t, tuple) or len(t) != _FIELDS or t[0] != WIRE_VERSION
            or t[1] not in (RECORD, NOTE)):
        raise DecodeError("not a shmring.logging record")
    if (not all(isinstance(t[i], str) for i in _STR_FIELDS)
            or not all(t[i] is None or isinstance(t[i], str) for i in _OPT_STR_FIELDS)
            or not isinstance(t[2], float)
            or not all(isinstance(t[i], int) for i in (3, 7, 11, 15)) or t[15] < 0):
        raise DecodeError("a shmring.logging record with fields of the wrong type")
    pid, dropped = t[7], t[15]
    if t[1] == NOTE:
        return None, dropped, pid
    created = t[2]
    rec = logging.makeLogRecord({
        "created": created, "msecs": (created - int(created)) * 1000.0,
        "levelno": t[3], "levelname": t[4], "name": t[5], "msg": t[6], "args": None,
        "process": pid, "processName": t[8], "threadName": t[9], "pathname": t[10],
        "filename": os.path.basename(t[10]), "module": os.path.splitext(os.path.basename(t[10]))[0],
        "lineno": t[11], "funcName": t[12], "exc_info": None, "exc_text": t[13],
        "stack_info": t[14],
    })
    return rec, dropped, pid


