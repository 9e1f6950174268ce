"""Fed rings under SIGKILL (tests/fed_util.py): for each pattern, a child
feeding keyed records in batches is killed at random instants, round after
round; after each kill ``fed_state`` must name exactly the last record in
the ring, before and after recovery, and the keys received over all rounds
must run without a gap, a duplicate or a reordering."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from fed_util import PATTERNS, run_rounds

import shmring

ROUNDS = 20


@pytest.mark.parametrize("pattern", PATTERNS)
def test_fed_state_exact_after_sigkill(make_channel: Callable[..., shmring.Channel],
                                       pattern: str) -> None:
    rng = random.Random(f"fed-{pattern}")
    ch = make_channel(pattern, 8192, supervised=False)
    stream, kinds = run_rounds(ch, rng, rounds=ROUNDS)
    print(f"\n{pattern}: {stream.count} records, {len(stream.epochs)} epochs, "
          f"answers checked: {dict(kinds)}")
    assert stream.count > ROUNDS  # records flowed, most rounds killed a child mid-feed
    assert len(stream.epochs) > 1  # and epoch changes happened
