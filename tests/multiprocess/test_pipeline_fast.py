"""A map stage's one-call path (csrc/py/link_map.c, ``_link_map``) and what it
hands back to the worker's Python: results that are not plain values or are
too large for it, a next edge that stays full, exceptions with their remote
tracebacks, a stage's state, order. Real workers and real rings; the board
words the C code writes are read back through ``run.stats``."""

from __future__ import annotations

import re
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from pipeline_util import double, gone, inc, read_ahead

import shmring
from shmring._pipeline import board as B

ROOT = Path(__file__).resolve().parents[2]


def test_the_c_board_words_are_the_boards() -> None:
    src = (ROOT / "src/shmring/csrc/py/link_map.c").read_text()
    words = {m[1]: int(m[2]) for m in re.finditer(r"#define W_([A-Z_]+) (\d+)u", src)}
    assert words == {"ITEM": B.ITEM, "STARTED": B.STARTED, "AGAIN": B.AGAIN, "FIRST": B.FIRST,
                     "OUT": B.OUT, "BUSY_NS": B.BUSY_NS, "HIST": B.HIST, "BUCKETS": B.BUCKETS}


def test_plain_items_are_counted_and_timed_on_the_board(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(4000)).map(inc, workers=2).map(double)
    with p.run() as run:
        out = sorted(run)
    assert out == [2 * (x + 1) for x in range(4000)]
    for stage in ("inc", "double"):
        s = run.stats[stage]
        assert (s["in"], s["out"], s["redelivered"], s["errors"]) == (4000, 4000, 0, 0)
        assert s["p50_s"] is not None and s["p99_s"] >= s["p50_s"]
        assert s["busy"] == 0
    assert gone(pname)


def _mixed(x: int) -> Any:
    """Plain values, then objects the value codec refuses, then values too
    large for the one-call path (4 KiB): every kind of result in one stage."""
    if x % 3 == 0:
        return Fraction(x, 7)
    if x % 3 == 1:
        return "v" * 5000 + str(x)
    return x


def test_results_that_are_not_small_plain_values_go_out_from_python(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(600)).map(_mixed, workers=2).map(lambda v: v, name="again")
    with p.run() as run:
        out = list(run)
    assert sorted(map(repr, out)) == sorted(repr(_mixed(x)) for x in range(600))
    assert run.stats["_mixed"]["out"] == 600 and run.stats["again"]["out"] == 600


def test_a_stage_with_state_gets_it_with_each_plain_value(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(500)).map(lambda x, s: x + s["add"], init=lambda: {"add": 1000},
                             workers=2, name="plus")
    with p.run() as run:
        assert sorted(run) == [x + 1000 for x in range(500)]


def test_order_holds_through_one_call_maps(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(3000)).map(inc, workers=3, ordered=True).map(double, workers=2)
    with p.run() as run:
        assert list(run) == [2 * (x + 1) for x in range(3000)]


def _slow_first(x: int) -> int:
    if x == 1:
        time.sleep(2.5)
    return x


def test_a_next_edge_full_for_seconds_loses_nothing(pname: str) -> None:
    """The next edge (max_bytes 4 KiB) fills while its one worker sleeps 2.5 s
    on its first item: the one-call commit gives up after a second and the
    worker's Python waits on, as long as the run lives."""
    p = shmring.Pipeline(pname)
    p.source(range(20_000)).map(inc).map(_slow_first, max_bytes=4096, name="slow")
    t0 = time.monotonic()
    with p.run() as run:
        out = list(run)
    assert time.monotonic() - t0 >= 2.5
    assert sorted(out) == list(range(1, 20_001))
    assert run.stats["inc"]["out"] == 20_000


def _picky(x: int) -> int:
    if x % 10 == 3:
        raise ValueError(f"bad {x}")
    return x


def test_exceptions_keep_their_traceback_and_their_item(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(100)).map(_picky, workers=2)
    with p.run(on_error="dead_letter") as run:
        out = list(run)
    assert sorted(out) == [x for x in range(100) if x % 10 != 3]
    assert sorted(run.dead_letters) == [(x, f"ValueError: bad {x}") for x in range(3, 100, 10)]
    p = shmring.Pipeline(f"{pname}-raise")
    p.source(range(100)).map(_picky, workers=2)
    with pytest.raises(shmring.RemoteError) as info, p.run() as run:
        list(run)
    e = info.value
    assert e.stage == "_picky" and e.item % 10 == 3
    assert "in _picky" in e.remote_traceback and "ValueError: bad" in e.remote_traceback


def test_a_loop_broken_out_of_loses_none_of_a_batch(pname: str) -> None:
    """Outputs come out of the ring many at a time: those not yielded when
    the loop breaks are the next loop's."""
    p = shmring.Pipeline(pname)
    p.source(range(5000)).map(inc, workers=2)
    with p.run() as run:
        first = []
        for x in run:
            first.append(x)
            if len(first) == 10:
                break
        time.sleep(0.2)  # the rest waits in the last ring
        rest = list(run)
    assert sorted(first + rest) == [x + 1 for x in range(5000)]


def _sometimes_plain(x: int) -> Any:
    return Fraction(x, 3) if x % 7 == 0 else "s" * 5000 if x % 11 == 0 else x


def test_a_source_of_mixed_items_arrives_whole_and_in_order(pname: str) -> None:
    """The feeder sends plain values many to a call and hands the others
    (pickled, or too large for one call's buffer) to the general path."""
    items = [_sometimes_plain(x) for x in range(3000)]
    p = shmring.Pipeline(pname)
    p.source(iter(items)).map(lambda v: v, workers=2, ordered=True, name="same")
    with p.run() as run:
        assert list(run) == items


def test_a_source_without_max_inflight_is_read_only_as_far_as_the_edges_hold(
        pname: str) -> None:
    ahead = read_ahead(pname, lambda s: s.map(inc, workers=2, max_bytes=4096)
                       .map(inc, max_bytes=4096))
    # Bounded by the rings (4 KiB into each stage, the output ring), an
    # item per worker and one batch of outputs taken (64); never growing.
    assert max(ahead) < 600, ahead
    assert ahead[-1] <= max(ahead[:5]) + 50, ahead


def _keep(x: Any) -> bool:
    """Yes for odd ints and for every value that is not an int."""
    return not isinstance(x, int) or x % 2 == 1


@pytest.mark.parametrize("ordered", [False, True])
def test_a_filter_passes_its_yeses_on_as_they_came(pname: str, ordered: bool) -> None:
    """A yes sends the input's own record on, a no finishes the input (or,
    ordered, keeps its place with a tombstone, from Python)."""
    items = [Fraction(x, 5) if x % 50 == 0 else ("t" * 9000 if x % 77 == 0 else x)
             for x in range(3000)]
    p = shmring.Pipeline(pname)
    p.source(iter(items)).filter(_keep, workers=2, ordered=ordered)
    with p.run() as run:
        out = list(run)
    want = [v for v in items if _keep(v)]
    assert out == want if ordered else sorted(map(repr, out)) == sorted(map(repr, want))
    s = run.stats["_keep"]
    assert (s["in"], s["out"], s["errors"]) == (3000, len(want), 0)
    assert s["p50_s"] is not None


def test_a_sink_finishes_each_item_it_is_given(pname: str, tmp_path: Path) -> None:
    path = tmp_path / "seen"

    def record(x: int, f: Any) -> None:
        f.write(f"{x}\n")
        f.flush()

    p = shmring.Pipeline(pname)
    p.source(range(2000)).map(inc).sink(record, workers=2,
                                        init=lambda: open(path, "a"))  # noqa: SIM115
    with p.run() as run:
        assert run.wait(timeout=60) == []
    assert sorted(int(x) for x in path.read_text().split()) == list(range(1, 2001))
    s = run.stats["record"]
    assert (s["in"], s["out"], s["busy"]) == (2000, 0, 0)
    assert s["p50_s"] is not None


def _sink_picky(x: int) -> None:
    if x % 100 == 7:
        raise KeyError(x)


def test_a_sinks_exceptions_are_dead_letters(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(1000)).sink(_sink_picky, workers=2)
    with p.run(on_error="dead_letter") as run:
        run.wait(timeout=60)
    assert sorted(run.dead_letters) == [(x, f"KeyError: {x}") for x in range(7, 1000, 100)]
