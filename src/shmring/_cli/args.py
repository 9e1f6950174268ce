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
