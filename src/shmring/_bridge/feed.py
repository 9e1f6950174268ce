"""The importer's two calls into the extension: commit a batch with its keys
(``ProducerCore._send_fed_packed``, the records straight from the frames)
and read back the key of the last record a ring holds
(``_core.fed_state``). See layout.h, "fed rings"."""

from __future__ import annotations

from typing import Any

from .. import _core


def send_fed_packed(producer: Any, batch: Any, skip: int, timeout: float | None) -> int:
    """Commit the records of a DATA ``batch`` (``wire.Batch``) but its first
    ``skip``, straight from its frames; how many were committed."""
    n: int = producer._send_fed_packed(batch.body, batch.lens, batch.seqs, batch.epoch, skip,
                                       timeout)
    return n


def fed_state(buffer: Any) -> tuple[int, int]:
    """(epoch, seq) of the last record committed into the ring by a bridge,
    (0, 0) if none."""
    epoch, seq = _core.fed_state(buffer)
    return int(epoch), int(seq)
