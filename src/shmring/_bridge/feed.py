"""The importer's two calls into the extension: commit a batch with its keys
(``ProducerCore._send_fed``) and read back the key of the last record a ring
holds (``_core.fed_state``). See layout.h, "fed rings"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _core


def send_fed(producer: Any, items: Sequence[Any], epoch: int, seqs: Sequence[int],
             timeout: float | None) -> int:
    """Commit ``items`` with keys ``(epoch, seqs[i])``, in order, waiting up
    to ``timeout`` for space; how many were committed."""
    n: int = producer._send_fed(items, epoch, seqs, timeout)
    return n


def fed_state(buffer: Any) -> tuple[int, int]:
    """(epoch, seq) of the last record committed into the ring by a bridge,
    (0, 0) if none."""
    epoch, seq = _core.fed_state(buffer)
    return int(epoch), int(seq)
