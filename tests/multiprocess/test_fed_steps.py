"""A fed ring's answer at every instant of a batch: a child feeding one
batch stops itself at its k-th step (``_core._feed_trap``: each store of a
FEED word, of tail or of a record word, each claim and each copy), is
SIGKILLed there, and ``fed_state`` must name exactly the last record in the
ring, before and after recovery; then the next child resumes from it, so
the keys received over all kills must run without a gap or a duplicate.
Every step of the short scenarios, every seventh of the long ones (the
stress run takes every step of those: stress/test_fed_kill_stress.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from fed_util import (
    CAPACITY,
    MAX_MESSAGE,
    PATTERNS,
    SCENARIOS,
    Stream,
    drain,
    kill_at_step,
    record,
    start_seq,
)

import shmring


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("pattern", PATTERNS)
def test_kill_at_every_step(make_channel: Callable[..., shmring.Channel], pattern: str,
                            scenario: str) -> None:
    ch = make_channel(pattern, CAPACITY, supervised=False, max_message=MAX_MESSAGE)
    rx = ch.consumer()
    stream = Stream()
    tx = ch.producer()  # the ring was fed before: "same-epoch" continues an epoch
    assert tx._send_fed([record(1, start_seq(1), 40)], 1, start_seq(1)) == 1
    tx.close()
    drain(rx, stream)
    stride = 1 if SCENARIOS[scenario][1] < 10 else 7
    kinds: Counter[str] = Counter()
    k = 1
    while kill_at_step(ch, rx, stream, scenario, k, seed=k, kinds=kinds):
        k += stride
    print(f"\n{pattern} {scenario}: {k - 1} steps, answers: {dict(kinds)}")
    assert k > 5 * stride  # the batch had steps to kill at
    assert stream.count > 0
    rx.close()
