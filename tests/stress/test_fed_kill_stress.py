"""The long run of fed rings under SIGKILL (``-m stress``; tests/fed_util.py):
until ``SHMRING_STORM_BUDGET`` seconds (90 by default) are spent, split over
the patterns, new channels with new seeds, each taking random-instant kill
rounds (the feeder stopped and checked at random instants too), then a kill
at every step of every scenario's batch. After each kill ``fed_state`` must
name exactly the last record in the ring, before and after recovery, and
the keys received over the channel's life must have no gap or duplicate."""

from __future__ import annotations

import os
import random
import time
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
    run_rounds,
)

import shmring


@pytest.mark.stress
@pytest.mark.parametrize("pattern", PATTERNS)
def test_fed_kill_storm(make_channel: Callable[..., shmring.Channel], pattern: str) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90")) / len(PATTERNS)
    end = time.monotonic() + budget
    trials = records = kills = 0
    kinds: Counter[str] = Counter()
    while time.monotonic() < end:
        trials += 1
        rng = random.Random(f"{pattern}-{trials}")
        ch = make_channel(pattern, rng.choice((4096, 8192, 65536)), supervised=False,
                          suffix=f"r{trials}")
        stream, got = run_rounds(ch, rng, until=min(end, time.monotonic() + budget / 4))
        kinds += got
        records += stream.count
        kills += sum(v for k, v in got.items() if k.startswith("killed"))
        ch = make_channel(pattern, CAPACITY, supervised=False, max_message=MAX_MESSAGE,
                          suffix=f"s{trials}")
        rx = ch.consumer()
        stream = Stream()
        for scenario in SCENARIOS:
            k = 1
            while time.monotonic() < end and kill_at_step(ch, rx, stream, scenario, k,
                                                          seed=rng.randrange(1 << 30),
                                                          kinds=kinds):
                k += 1
                kills += 1
        drain(rx, stream)
        records += stream.count
        rx.close()  # (make_channel closes and unlinks the channels at the end)
    print(f"\nfed storm {pattern}: {trials} trials, {kills} kills, {records} records, "
          f"answers: {dict(kinds)}")
    assert trials >= 1 and kills > 0
