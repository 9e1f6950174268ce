"""The long run of the random-corruption fuzz (``-m stress``): the same
check as contract/test_fuzz_corrupt.py's ``test_fuzz_random_words``, with
more and longer change lists and not derandomized, so each run tries new
cases. Bounded by hypothesis's ``max_examples``."""

from __future__ import annotations

import pytest
from corrupt_util import corruption, run_fuzz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pattern_util import KIND_IDS, KINDS

PATTERNS, PATTERN_IDS = KINDS, KIND_IDS


@pytest.fixture(autouse=True)
def _unsupervised(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lifetimes here are the test's own (it unlinks); no supervisor process.
    monkeypatch.setenv("SHMRING_SUPERVISOR", "0")


@pytest.mark.stress
@pytest.mark.parametrize(("pattern", "lossy"), PATTERNS, ids=PATTERN_IDS)
@settings(max_examples=1500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.lists(corruption, min_size=1, max_size=6))
def test_fuzz_random_words_stress(uname: str, pattern: str, lossy: bool,
                                  changes: list[tuple[str, int, str, int]]) -> None:
    """Random 8-byte values at random aligned offsets, longer and not
    derandomized."""
    run_fuzz(uname, pattern, lossy, changes)
