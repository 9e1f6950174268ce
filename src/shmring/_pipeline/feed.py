"""A run's source, read lazily into the first edge (the parent's feeder
thread): one record per item, or per chunk of ``chunksize`` items, never
further ahead than the first stage's ``max_inflight`` allows."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

from .._channel.endpoints import Producer
from .._errors import Timeout
from . import item as I
from .arrays import ArrayPool
from .board import Board
from .chunk import source_chunk

#: Plain values sent per C call (csrc/py/pipe_batch.c): the feeder holds the
#: GIL that long, about a microsecond an item.
SOURCE_BATCH = 64


def feed(tx: Producer, it: Iterator[Any], size: int, limit: int | None, board: Board,
         stop: threading.Event, pool: ArrayPool | None = None) -> bool:
    """Send every item of ``it``; False if ``stop`` was set first. Large
    arrays go into ``pool`` (the first stage is zero_copy), if given."""
    n = 0
    while True:
        if size == 1 and limit is None:
            # Plain values go many to a call while the edge has room; the
            # item it hands back is sent below.
            sent, obj, ended = tx._send_items(it, n, SOURCE_BATCH)
            n += sent
            if ended:
                return True
            if stop.is_set():
                return False
            if obj is None:
                continue
            data, plan = I.source_record(n, obj, pool=pool)
            n += 1
        elif size == 1:
            try:
                obj = next(it)
            except StopIteration:
                return True
            data, plan = I.source_record(n, obj, pool=pool)
            n += 1
        else:
            objs = list(itertools.islice(it, size))
            if not objs:
                return True
            data, plan = source_chunk(n, objs)
            n += len(objs)
        if limit is not None:
            while board.inflight(0) >= limit:
                if stop.wait(0.0005):
                    return False
        while True:
            if stop.is_set():
                return False
            try:
                if plan is None:
                    tx.send(data, 0.1)
                else:
                    I.send_planned(tx, data, plan)
                break
            except Timeout:
                pass
        if limit is not None:
            board.sent(0)
