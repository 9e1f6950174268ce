"""Argument types of the ``shmring`` command: each one turns a string from the
command line into a checked value or raises ``argparse.ArgumentTypeError``, so
that a bad number or namespace is refused by argparse itself (one line on
stderr, exit status 2) before any command runs.

The supervisor's options are checked the same way in
``_supervisor/command.py``, which cannot import this package (nothing imports
``_cli``), so it carries its own two small types.
"""

from __future__ import annotations

import argparse

from .._errors import InvalidArgument
from .._region.names import check_namespace, segment_name


def namespace(text: str) -> str:
    """A namespace: 1-40 letters, digits, ``_`` or ``-``."""
    try:
        return check_namespace(text)
    except InvalidArgument as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
    """A whole number of at least 1 (``1_000_000`` and ``1000000`` both read)."""
    try:
        value = int(text.replace("_", ""), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def region_name(text: str) -> str:
    """A region's name as given to ``Channel.create`` (checked, not looked up)."""
    try:
        segment_name(text, "default")
    except InvalidArgument as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def seconds(text: str) -> float | None:
    """A duration in seconds, at least 0 (``0.5``, ``10``); ``forever`` is None."""
    if text.strip().lower() in ("forever", "inf", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more seconds (or 'forever')")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (a rate, per second)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number above 0")
    return value


def seq_number(text: str) -> int:
    """A journal sequence number: a whole number of at least 0."""
    try:
        value = int(text.replace("_", ""), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a sequence number is 0 or more")
    return value


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size_bytes(text: str) -> int:
    """A size in bytes: ``65536``, ``64K``, ``64M``, ``1G`` (powers of 1024;
    ``KiB``/``MiB``/``GiB`` read too)."""
    t = text.strip().upper().replace("_", "").removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    try:
        value = int(t[:-1] if unit else t, 10) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (a whole number of bytes, or 64K, 64M, 1G)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1 byte")
    return value
