"""shmring.Pipeline as a user meets it: stages, results, order, errors,
state, sinks, pools resized while they run, bad arguments. Real worker
processes and real shared memory throughout."""

from __future__ import annotations

import collections
import re
import threading
import time
from typing import Any

import pytest
from pipeline_util import double, gone, inc, odd, spread

import shmring


def test_map_filter_flat_map_give_every_output_once(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(3000)).map(inc, workers=2).filter(odd, workers=2).flat_map(spread).map(double)
    with p.run() as run:
        out = list(run)
    want = [2 * y for x in range(3000) if (x + 1) % 2 for y in spread(x + 1)]
    assert collections.Counter(out) == collections.Counter(want)
    s = run.stats
    assert list(s) == ["inc", "odd", "spread", "double"]
    assert (s["inc"]["in"], s["inc"]["out"]) == (3000, 3000)
    assert (s["odd"]["in"], s["odd"]["out"]) == (3000, 1500)
    assert s["double"]["out"] == len(want)
    assert all(v["redelivered"] == 0 and v["restarts"] == 0 for v in s.values())
    assert s["inc"]["p50_s"] is not None and s["inc"]["p99_s"] >= s["inc"]["p50_s"]
    assert gone(pname)


@pytest.mark.parametrize("workers", [1, 3])
def test_ordered_gives_source_order(pname: str, workers: int) -> None:
    p = shmring.Pipeline(pname)
    (p.source(range(2000)).map(inc, workers=workers, ordered=True)
     .filter(odd, workers=workers).flat_map(spread, workers=workers))
    with p.run() as run:
        out = list(run)
    assert out == [y for x in range(2000) if (x + 1) % 2 for y in spread(x + 1)]


def test_unordered_output_really_is_reordered_by_ordered(pname: str) -> None:
    """A slow first item: without ordered=True it comes last, with it first."""
    def slow_first(x: int) -> int:
        if x == 0:
            time.sleep(0.3)
        return x

    for ordered in (False, True):
        p = shmring.Pipeline(f"{pname}-{int(ordered)}")
        p.source(range(50)).map(slow_first, workers=2, ordered=ordered)
        with p.run() as run:
            out = list(run)
        assert sorted(out) == list(range(50))
        assert (out == list(range(50))) is ordered


def test_init_runs_once_per_worker_and_is_passed_on(pname: str) -> None:
    import os

    def load() -> dict[str, Any]:
        return {"pid": os.getpid(), "scale": 10}

    def scale(x: int, state: dict[str, Any]) -> tuple[int, bool]:
        return x * state["scale"], state["pid"] == os.getpid()

    p = shmring.Pipeline(pname)
    p.source(range(500)).map(scale, workers=2, init=load)
    with p.run() as run:
        out = list(run)
    assert sorted(v for v, _ in out) == [x * 10 for x in range(500)]
    assert all(own for _, own in out)  # each worker's own state


def test_sink_and_wait(pname: str, tmp_path: Any) -> None:
    path = tmp_path / "seen"

    def record(x: int) -> None:
        with open(path, "a") as f:
            f.write(f"{x}\n")

    p = shmring.Pipeline(pname)
    p.source(range(300)).map(inc).sink(record, workers=2)
    with p.run() as run:
        assert run.wait(timeout=30) == []
        with pytest.raises(shmring.InvalidArgument, match="sink"):
            iter(run).__next__()
    assert sorted(int(x) for x in path.read_text().split()) == list(range(1, 301))
    assert run.stats["record"]["in"] == 300


def test_wait_returns_outputs_not_iterated(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(100)).map(double)
    with p.run() as run:
        assert sorted(run.wait(timeout=30)) == [2 * x for x in range(100)]


def test_raise_stops_the_run_with_the_remote_traceback(pname: str) -> None:
    def picky(x: int) -> int:
        if x == 42:
            raise KeyError("no 42 here")
        return x

    p = shmring.Pipeline(pname)
    p.source(range(100000)).map(picky, workers=2)
    t0 = time.monotonic()
    with pytest.raises(shmring.RemoteError) as ei, p.run() as run:
        for _ in run:
            pass
    e = ei.value
    assert e.stage == "picky" and e.item == 42
    assert "KeyError: 'no 42 here'" in e.remote_traceback and "in picky" in e.remote_traceback
    assert "no 42 here" in str(e)
    assert time.monotonic() - t0 < 10
    assert gone(pname)


def test_skip_and_dead_letter(pname: str) -> None:
    def picky(x: int) -> int:
        if x % 10 == 3:
            raise ValueError(f"bad {x}")
        return x

    p = shmring.Pipeline(pname)
    p.source(range(100)).map(picky, workers=2)
    with p.run(on_error="skip") as run:
        out = list(run)
    assert sorted(out) == [x for x in range(100) if x % 10 != 3]
    assert run.stats["picky"]["skipped"] == 10 and run.dead_letters == []

    p = shmring.Pipeline(pname + "d")
    p.source(range(100)).map(picky, workers=2, ordered=True)
    with p.run(on_error="dead_letter") as run:
        out = list(run)
    assert out == [x for x in range(100) if x % 10 != 3]
    assert sorted(run.dead_letters) == [(x, f"ValueError: bad {x}") for x in range(3, 100, 10)]
    assert run.stats["picky"]["dead_lettered"] == 10


def test_a_failing_init_stops_the_run(pname: str) -> None:
    def broken() -> None:
        raise OSError("model file missing")

    p = shmring.Pipeline(pname)
    p.source(range(10)).map(lambda x, s: x, init=broken)
    with pytest.raises(shmring.RemoteError, match="model file missing") as ei, p.run() as run:
        list(run)
    assert ei.value.stage == "lambda"


def test_zero_copy_gives_read_only_views(pname: str) -> None:
    import numpy as np

    def look(a: Any) -> tuple[bool, bool, float]:
        return a.flags.writeable, a.base is not None, float(a.sum())

    p = shmring.Pipeline(pname)
    p.source(np.full(100_000, i, np.float64) for i in range(20)).map(look, zero_copy=True)
    with p.run() as run:
        out = sorted(run, key=lambda t: t[2])
    assert out == [(False, True, 100_000.0 * i) for i in range(20)]

    p = shmring.Pipeline(pname + "c")
    p.source(np.full(100_000, i, np.float64) for i in range(5)).map(look)
    with p.run() as run:
        assert all(writeable for writeable, _, _ in run)


def test_large_items_need_max_bytes(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source([b"x" * (3 << 20)]).map(len)
    with pytest.raises(shmring.MessageTooLarge), p.run() as run:
        list(run)
    p = shmring.Pipeline(pname + "b")
    p.source([b"x" * (3 << 20)]).map(len, max_bytes=8 << 20)
    with p.run() as run:
        assert list(run) == [3 << 20]


def test_scale_resizes_a_pool_while_it_runs(pname: str) -> None:
    gate = threading.Event()

    def source() -> Any:
        yield from range(200)
        gate.wait(20)
        yield from range(200, 400)

    def slow(x: int) -> int:
        time.sleep(0.002)
        return x

    p = shmring.Pipeline(pname)
    p.source(source()).map(slow, workers=1)
    with p.run() as run:
        it = iter(run)
        first = [next(it) for _ in range(50)]
        assert len(run.pids("slow")) == 1
        run.scale("slow", 3)
        deadline = time.monotonic() + 10
        while len(run.pids("slow")) != 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(run.pids("slow")) == 3
        run.scale("slow", 1)
        deadline = time.monotonic() + 10
        while len(run.pids("slow")) != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(run.pids("slow")) == 1
        gate.set()
        rest = list(it)
    assert sorted(first + rest) == list(range(400))
    assert run.stats["slow"]["restarts"] == 0


def test_cancel_ends_iteration_and_cleans_up(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(iter(int, 1)).map(inc, workers=2)  # endless zeros
    with p.run() as run:
        n = 0
        for _ in run:
            n += 1
            if n == 100:
                run.cancel()
        pids = run.pids("inc")
    assert n >= 100 and pids == []
    assert gone(pname)


def test_spawn_needs_importable_functions(pname: str) -> None:
    p = shmring.Pipeline(pname, context="spawn")
    p.source(range(50)).map(double, workers=2)
    with p.run() as run:
        assert sorted(run) == [2 * x for x in range(50)]
    p = shmring.Pipeline(pname + "s", context="spawn")
    p.source(range(5)).map(lambda x: x)
    with pytest.raises(shmring.InvalidArgument, match="module level"), p.run():
        pass
    assert gone(pname + "s")


@pytest.mark.parametrize(("build", "match"), [
    (lambda p: p.source(range(3)).map(inc, workers=0), "workers"),
    (lambda p: p.source(range(3)).map(inc, timeout=0), "timeout"),
    (lambda p: p.source(range(3)).map(inc, name="a b"), "stage name"),
    (lambda p: p.source(range(3)).map(inc, max_redeliveries=-1), "max_redeliveries"),
    (lambda p: p.source(range(3)).map(inc, max_bytes=10), "max_bytes"),
    (lambda p: p.source(range(3)).map(inc, max_inflight=0), "max_inflight"),
    (lambda p: (p.source(range(3)), p.source(range(3))), "one source"),
    (lambda p: p.source(range(3)) and p.run(), "no stages"),
    (lambda p: p.source(range(3)).map(inc) and p.run(on_error="ignore"), "on_error"),
])
def test_bad_arguments_raise_invalid_argument(pname: str, build: Any, match: str) -> None:
    p = shmring.Pipeline(pname)
    with pytest.raises(shmring.InvalidArgument, match=match):
        build(p)


def test_a_chain_cannot_branch(pname: str) -> None:
    p = shmring.Pipeline(pname)
    s = p.source(range(3))
    s.map(inc)
    with pytest.raises(shmring.InvalidArgument, match="one chain"):
        s.map(double)
    with pytest.raises(shmring.InvalidArgument, match="pipeline name"):
        shmring.Pipeline("a.b")
    with pytest.raises(shmring.InvalidArgument, match="context"):
        shmring.Pipeline("a", context="threads")
    with pytest.raises(TypeError):
        shmring.Pipeline("a").source(3)  # type: ignore[arg-type]
    with pytest.raises(shmring.InvalidArgument, match="no source"):
        shmring.Pipeline("a").run()


def test_stage_names_are_unique_and_listed(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(10)).map(inc).map(inc).map(inc, name="third")
    assert p.stages == ["inc", "inc-2", "third"]
    with p.run() as run:
        assert sorted(run) == [x + 3 for x in range(10)]
        with pytest.raises(shmring.InvalidArgument, match="no stage named"):
            run.pids("nope")


def test_a_failing_source_stops_the_run_with_its_exception(pname: str) -> None:
    def source() -> Any:
        yield from range(10)
        raise OSError("disk gone")

    p = shmring.Pipeline(pname)
    p.source(source()).map(inc)
    with pytest.raises(OSError, match="disk gone"), p.run() as run:
        list(run)
    assert gone(pname)


def test_wait_raises_the_remote_error_of_a_sink(pname: str) -> None:
    def bad(x: int) -> None:
        if x == 3:
            raise RuntimeError("sink broke")

    p = shmring.Pipeline(pname)
    p.source(range(10)).sink(bad)
    with pytest.raises(shmring.RemoteError, match="sink broke") as ei, p.run() as run:
        run.wait(timeout=30)
    assert ei.value.stage == "bad" and ei.value.item == 3


def test_a_run_is_used_inside_its_with_block(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(3)).map(inc)
    run = p.run()
    with pytest.raises(shmring.InvalidArgument, match="start the run"):
        list(run)
    with run:
        assert sorted(run) == [1, 2, 3]
    with pytest.raises(shmring.InvalidArgument, match="entered once"), run:
        pass


def test_progress_prints_counts(pname: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(200)).map(inc).map(double)
    with p.run(progress=True) as run:
        assert len(list(run)) == 200
    err = capsys.readouterr().err
    assert "inc 200>200" in err.splitlines()[-1] and "double 200>200" in err


def test_wait_keeps_its_timeout_and_loses_nothing(pname: str) -> None:
    def slow(x: int) -> int:
        time.sleep(0.4 if x == 3 else 0)
        return x

    p = shmring.Pipeline(pname)
    p.source(range(6)).map(slow, ordered=True)
    with p.run() as run:
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout):
            run.wait(timeout=0.1)
        assert time.monotonic() - t0 < 0.35
        assert run.wait(timeout=30) == list(range(6))


@pytest.mark.parametrize("chunksize", [1, 4])
def test_a_large_item_that_fails_is_dead_lettered_by_its_size(pname: str, chunksize: int) -> None:
    def refuse_big(b: bytes) -> int:
        if len(b) > 1000:
            raise ValueError("too big for me")
        return len(b)

    p = shmring.Pipeline(pname)
    p.source([b"x" * 10, b"y" * (1 << 20), b"z" * 20], chunksize=chunksize).map(
        refuse_big, max_bytes=8 << 20)
    with p.run(on_error="dead_letter") as run:
        assert sorted(run) == [10, 20]
    ((item, reason),) = run.dead_letters
    assert reason == "ValueError: too big for me"
    assert re.fullmatch(r"<an item of \d{7} encoded bytes, too large to keep in a note>", item)
