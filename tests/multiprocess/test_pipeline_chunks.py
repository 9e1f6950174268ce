"""Items in chunks (``source(iterable, chunksize=K)``): the same results,
order, errors, dead letters and stats as one item per record, and a poison
item in a chunk costs only itself."""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest
from pipeline_util import double, inc, kill_self_on, odd, spread

import shmring


@pytest.mark.parametrize("chunksize", [2, 64, 5000])
def test_results_and_stats_match_single_items(pname: str, chunksize: int) -> None:
    p = shmring.Pipeline(pname)
    (p.source(range(3000), chunksize=chunksize).map(inc, workers=2).filter(odd, workers=2)
     .flat_map(spread).map(double))
    with p.run() as run:
        out = list(run)
    want = [2 * y for x in range(3000) if (x + 1) % 2 for y in spread(x + 1)]
    assert collections.Counter(out) == collections.Counter(want)
    s = run.stats
    assert (s["inc"]["in"], s["inc"]["out"]) == (3000, 3000)
    assert (s["odd"]["in"], s["odd"]["out"]) == (3000, 1500)
    assert s["double"]["out"] == len(want)
    assert s["inc"]["p50_s"] is not None


@pytest.mark.parametrize("chunksize", [3, 100])
def test_ordered(pname: str, chunksize: int) -> None:
    p = shmring.Pipeline(pname)
    (p.source(range(2000), chunksize=chunksize).map(inc, workers=2, ordered=True)
     .filter(odd, workers=2).flat_map(spread, workers=2))
    with p.run() as run:
        out = list(run)
    assert out == [y for x in range(2000) if (x + 1) % 2 for y in spread(x + 1)]


@pytest.mark.parametrize("ordered", [False, True])
def test_loops_broken_off_inside_a_chunk_lose_none_of_it(pname: str, ordered: bool) -> None:
    """A chunk's values are yielded from one record: a loop that breaks off
    in the middle of it, a ``next`` on a fresh ``iter(run)``, and a ``wait``
    that times out leave the rest to whatever reads next, in order."""
    def slow_last(x: int) -> int:
        if x == 2999:
            time.sleep(0.5)  # the wait below times out on it
        return x + 1

    p = shmring.Pipeline(pname)
    p.source(range(3000), chunksize=100).map(slow_last, workers=2, ordered=ordered)
    with p.run() as run:
        got = []
        for x in run:
            got.append(x)
            if len(got) == 150:  # half way into the second chunk
                break
        got.append(next(iter(run)))
        got.append(next(iter(run)))
        with pytest.raises(shmring.Timeout):
            got += run.wait(timeout=0.2)  # what it collected is not lost
        assert len(got) == 152
        for x in run:
            got.append(x)
            if len(got) == 2950:
                break
        got += run.wait(timeout=30)
    want = [x + 1 for x in range(3000)]
    assert (got if ordered else sorted(got)) == want


@pytest.mark.parametrize("ordered", [False, True])
def test_errors_are_per_item(pname: str, ordered: bool) -> None:
    def picky(x: int) -> int:
        if x % 10 == 3:
            raise ValueError(f"bad {x}")
        return x

    p = shmring.Pipeline(pname)
    p.source(range(100), chunksize=16).map(picky, workers=2, ordered=ordered)
    with p.run(on_error="dead_letter") as run:
        out = list(run)
    want = [x for x in range(100) if x % 10 != 3]
    assert (out if ordered else sorted(out)) == want
    assert sorted(run.dead_letters) == [(x, f"ValueError: bad {x}") for x in range(3, 100, 10)]

    p = shmring.Pipeline(pname + "s")
    p.source(range(100), chunksize=16).map(picky, workers=2, ordered=ordered)
    with p.run(on_error="skip") as run:
        out = list(run)
    assert (out if ordered else sorted(out)) == want
    assert run.stats["picky"]["skipped"] == 10

    p = shmring.Pipeline(pname + "r")
    p.source(range(100), chunksize=16).map(picky, workers=2, ordered=ordered)
    with pytest.raises(shmring.RemoteError, match=r"bad \d*3") as ei, p.run() as run:
        list(run)
    assert ei.value.stage == "picky" and isinstance(ei.value.item, int) and ei.value.item % 10 == 3


def test_a_poison_item_costs_only_itself(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(200), chunksize=50).map(kill_self_on, workers=2).map(inc)
    with p.run() as run:
        out = sorted(run)
    assert out == [x + 1 for x in range(200) if x != 13]
    assert run.dead_letters == [(13, "killed by SIGKILL")]
    s = run.stats["kill_self_on"]
    assert s["restarts"] == 3 and s["dead_lettered"] == 1


def test_a_poison_item_in_an_ordered_flat_map(pname: str) -> None:
    def fan(x: int) -> Any:
        yield x
        kill_self_on(x)
        yield -x

    p = shmring.Pipeline(pname)
    p.source(range(40), chunksize=8).flat_map(fan, workers=2, ordered=True)
    with p.run() as run:
        out = list(run)
    # In a chunk an item's outputs go out together, after it: none of 13's.
    assert out == [y for x in range(40) if x != 13 for y in (x, -x)]
    assert run.dead_letters == [(13, "killed by SIGKILL")]


def test_timeout_is_per_item(pname: str) -> None:
    def hang_on_5(x: int) -> int:
        if x == 5:
            time.sleep(3600)
        time.sleep(0.01)
        return x

    p = shmring.Pipeline(pname)
    # 20 items of 10 ms in a chunk: 200 ms a chunk, far past the timeout,
    # yet only item 5 is too slow.
    p.source(range(40), chunksize=20).map(hang_on_5, workers=2, timeout=0.15,
                                          max_redeliveries=1)
    with p.run() as run:
        assert sorted(run) == [x for x in range(40) if x != 5]
    assert run.dead_letters == [(5, "timeout")]


def test_sink_and_state(pname: str, tmp_path: Any) -> None:
    path = tmp_path / "seen"

    def record(x: int, log: list[int]) -> None:
        log.append(x)
        with open(path, "a") as f:
            f.write(f"{x} {len(log)}\n")

    p = shmring.Pipeline(pname)
    p.source(range(500), chunksize=32).map(inc).sink(record, workers=2, init=list)
    with p.run() as run:
        assert run.wait(timeout=30) == []
    lines = [line.split() for line in path.read_text().splitlines()]
    assert sorted(int(x) for x, _ in lines) == list(range(1, 501))
    assert max(int(n) for _, n in lines) > 1  # each worker kept its own state


def test_numpy_chunks(pname: str) -> None:
    import numpy as np
    p = shmring.Pipeline(pname)
    p.source((np.full(10_000, i) for i in range(30)), chunksize=4).map(lambda a: int(a.sum()),
                                                                      zero_copy=True)
    with p.run() as run:
        assert sorted(run) == [10_000 * i for i in range(30)]


def test_bad_chunksize(pname: str) -> None:
    with pytest.raises(shmring.InvalidArgument, match="chunksize"):
        shmring.Pipeline(pname).source(range(3), chunksize=0)


def test_a_chunk_of_failures_fits(pname: str) -> None:
    """Every item of big chunks fails: the notes travel with the chunk (one
    traceback each), into the next edge or, from a sink, the control channel."""
    def always(x: int) -> int:
        raise ValueError(f"no {x}")

    for build in ("map", "sink"):
        p = shmring.Pipeline(f"{pname}{build}")
        s = p.source(range(20000), chunksize=20000)  # notes past one record
        if build == "map":
            s.map(always)
        else:
            s.sink(always)
        with p.run(on_error="dead_letter") as run:
            assert run.wait(timeout=60) == []
        dead = run.dead_letters
        assert len(dead) == 20000 and dead[0][1].startswith("ValueError: no ")


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "entries"])
def test_a_chunk_too_large_for_one_record_goes_item_by_item(pname: str, compact: bool) -> None:
    def blob(n: int) -> bytes:
        return b"x" * n

    p = shmring.Pipeline(pname)
    # 64 outputs of 64 KiB: 4 MiB, twice what one record of the edge holds.
    s = p.source([64 << 10] * 64, chunksize=64)
    s.map(blob, timeout=None if compact else 30).map(len)
    with p.run() as run:
        assert list(run) == [64 << 10] * 64
    assert run.stats["blob"]["restarts"] == 0 and run.stats["blob"]["out"] == 64
