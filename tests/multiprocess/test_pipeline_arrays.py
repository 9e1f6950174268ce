"""Large arrays through zero_copy stages travel by reference in the run's
array pool (src/shmring/_pipeline/arrays.py): real worker processes, real
SIGKILLs; every array arrives once and whole, and the pool's slots all come
back."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
from pipeline_util import gone

import shmring

np = pytest.importorskip("numpy")

N = 100_000  # float64: 800 KB, 13 slots


def filled(i: int) -> Any:
    return np.full(N, float(i))


def intact(a: Any) -> int:
    """The item number an array is filled with (AssertionError if mixed)."""
    i = float(a[0])
    assert a.shape == (N,) and (a == i).all(), f"array {i} damaged"
    return int(i)


def address(a: Any) -> int:
    return int(a.__array_interface__["data"][0])


def where(a: Any) -> tuple[str, int]:
    """The file an array's bytes are mapped from, and their offset in it,
    or ("", address) if not in a file mapping (/proc/self/maps)."""
    at = address(a)
    with open("/proc/self/maps") as f:
        for line in f:
            span, _perms, offset, _dev, _inode, *path = line.split()
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= at < hi:
                return " ".join(path), at - lo + int(offset, 16)
    return "", at


def trace(x: Any) -> Any:
    """Notes where the array it got lies, and passes it on."""
    a = x["a"] if isinstance(x, dict) else x
    seen = x["seen"] if isinstance(x, dict) else []
    return {"a": a, "seen": [*seen, (where(a), a.flags.writeable)]}


def pool_empty(run: Any, timeout: float = 10.0) -> int:
    """Slots still allocated once the workers have let go (bounded wait:
    a worker frees its input's slots just after its output is sent)."""
    deadline = time.monotonic() + timeout
    while run._pool.used() and time.monotonic() < deadline:
        time.sleep(0.01)
    return int(run._pool.used())


def test_zero_copy_stages_pass_an_array_on_without_copying_it(pname: str) -> None:
    p = shmring.Pipeline(pname)
    opts: dict[str, Any] = {"zero_copy": True, "max_bytes": 16 << 20}
    (p.source(filled(i) for i in range(40))
     .map(trace, name="a", **opts).map(trace, name="b", **opts).map(trace, name="c", **opts))
    with p.run() as run:
        out = list(run)
        assert sorted(intact(o["a"]) for o in out) == list(range(40))
        for o in out:
            (a1, w1), (a2, w2), (a3, w3) = o["seen"]
            # The same bytes of the same segment in all three stages, and in
            # the parent: its outputs are read-only views of the pool too.
            assert a1 == a2 == a3 == where(o["a"])
            assert a1[0].endswith(".pool")
            assert not (w1 or w2 or w3 or o["a"].flags.writeable)
        assert run._pool.used() == 40 * 13  # the outputs hold their slots
        del out, o
        assert pool_empty(run) == 0  # and let them go with the last view
    assert gone(pname)


def test_outputs_held_past_the_run_stay_whole(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(filled(i) for i in range(5)).map(same, zero_copy=True, max_bytes=16 << 20)
    with p.run() as run:
        out = list(run)
    assert gone(pname)  # unlinked; still mapped while an output lives
    assert sorted(intact(a) for a in out) == list(range(5))
    assert where(out[0])[0].endswith(".pool (deleted)")
    del out  # frees slots of a run that is over: nothing to see, nothing raised


def test_outputs_that_fill_the_pool_come_as_copies(pname: str) -> None:
    p = shmring.Pipeline(pname)
    # The pool (8 MiB: the edge's 4 MiB and the bitmap, to a power of two)
    # holds 9 arrays of 800 KB; the parent keeps all 40, so the rest travel
    # in their records.
    p.source(filled(i) for i in range(40)).map(same, zero_copy=True, max_bytes=4 << 20)
    with p.run() as run:
        out = list(run)
        in_pool = [where(a)[0].endswith(".pool") for a in out]
        assert 0 < sum(in_pool) <= 9
    assert sorted(intact(a) for a in out) == list(range(40))


def test_without_zero_copy_a_stage_gets_its_own_copy(pname: str) -> None:
    p = shmring.Pipeline(pname)
    (p.source(filled(i) for i in range(10))
     .map(trace, name="a", zero_copy=True, max_bytes=16 << 20)
     .map(trace, name="b", max_bytes=16 << 20))
    with p.run() as run:
        out = list(run)
        assert pool_empty(run) == 0
    for o in out:
        (a1, w1), (a2, w2) = o["seen"]
        # Stage b's own copy (read-only, as the view it was made of).
        assert a1[0].endswith(".pool") and not a2[0].startswith("/dev/shm")
        assert not w1 and not w2


def new_array(a: Any) -> Any:
    return a + 1000.0


def keep_even(a: Any) -> bool:
    return int(a[0]) % 2 == 0


def halves(a: Any) -> list[Any]:
    return [a[: N // 2], a[N // 2:]]


def whole(parts: Any) -> Any:
    return parts


def fails_on_6(a: Any) -> Any:
    if int(a[0]) == 1006:
        raise ValueError("no 6")
    return a


def test_filters_new_arrays_errors_and_flat_maps_give_every_slot_back(pname: str) -> None:
    p = shmring.Pipeline(pname)
    opts: dict[str, Any] = {"zero_copy": True, "max_bytes": 16 << 20, "workers": 2}
    (p.source(filled(i) for i in range(30))
     .filter(keep_even, **opts)  # forwards the record it got
     .map(new_array, **opts)  # a new array: copied into new slots
     .map(fails_on_6, **opts)  # one item to the dead letters
     .flat_map(halves, **opts))  # outputs copied, never its input's slots
    with p.run(on_error="dead_letter") as run:
        out = list(run)
        assert pool_empty(run) == 0
    got = sorted((float(h[0]), h.shape) for h in out)
    want = sorted((1000.0 + i, (N // 2,)) for i in range(0, 30, 2) if i != 6 for _ in (0, 1))
    assert got == want
    for h in out:
        assert (h == h[0]).all()
    [(item, reason)] = run.dead_letters
    assert "ValueError: no 6" in reason
    assert "too large to keep in a note" in item  # an 800 KB item is described
    assert gone(pname)


def test_a_sink_reads_arrays_in_place(pname: str, tmp_path: Any) -> None:
    log = tmp_path / "sums"

    def check(a: Any) -> None:
        with open(log, "a") as f:
            f.write(f"{intact(a)} {a.flags.writeable}\n")

    p = shmring.Pipeline(pname)
    p.source(filled(i) for i in range(20)).map(trace, zero_copy=True).sink(
        lambda x: check(x["a"]), zero_copy=True)
    with p.run() as run:
        run.wait(timeout=60)
        assert pool_empty(run) == 0
    lines = sorted(log.read_text().split("\n")[:-1], key=lambda ln: int(ln.split()[0]))
    assert lines == [f"{i} False" for i in range(20)]


def same(a: Any) -> Any:
    return a


@pytest.mark.parametrize("seed", range(1, 5))
@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
@pytest.mark.parametrize("fresh", [False, True], ids=["by-reference", "new-arrays"])
def test_sigkill_storm_over_array_stages(pname: str, seed: int, fresh: bool,
                                         ordered: bool) -> None:
    """Random workers SIGKILLed while arrays move: each arrives once, whole.
    By reference no slot can leak; with new arrays a kill between the copy
    into the pool and the commit may leak that array's slots, no more."""
    rng = random.Random(seed)
    items, kills = 120, 10
    opts: dict[str, Any] = {"zero_copy": True, "max_bytes": 16 << 20, "workers": 2,
                            "max_redeliveries": 10**6}
    first = threading.Event()

    def source() -> Any:
        for i in range(items):
            if i == items // 2:
                first.wait(30)  # kill mid-stream, however fast the run
            yield filled(i)

    p = shmring.Pipeline(pname)
    p.source(source()).map(new_array if fresh else same, name="s1", ordered=ordered,
                           **opts).map(
        same, name="s2", **opts).map(same, name="s3", **opts)
    killed = 0
    with p.run() as run:
        done = threading.Event()

        def killer() -> None:
            nonlocal killed
            while killed < kills and not done.wait(rng.uniform(0.001, 0.01)):
                pids = run.pids(rng.choice(["s1", "s2", "s3"]))
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        killed += 1
                        first.set()
                    except ProcessLookupError:
                        pass

        t = threading.Thread(target=killer)
        t.start()
        try:
            out = [intact(a) for a in run.wait(timeout=120)]
        finally:
            done.set()
            t.join()
        left = pool_empty(run, timeout=5.0)
    base = 1000 if fresh else 0
    assert sorted(out) == [base + i for i in range(items)]  # none lost, none twice
    if ordered:
        assert out == sorted(out)
    assert killed > 0
    if fresh:
        assert left <= killed * 13
    else:
        assert left == 0
    assert gone(pname)


NO_ROOM = textwrap.dedent("""
    import os, numpy as np, shmring
    def same(a):
        return a
    p = shmring.Pipeline("noroom")
    p.source(np.full(100_000, float(i)) for i in range(30)).map(
        same, zero_copy=True, max_bytes=4 << 20)
    with p.run() as run:
        assert run._pool is None  # 12 MiB hold the run's channels, not a pool too
        out = sorted(float(a[0]) for a in run)
    assert out == [float(i) for i in range(30)], out
    assert os.listdir("/dev/shm") == [], os.listdir("/dev/shm")
    print("ok")
""")


def test_a_run_without_room_for_its_pool_copies_instead() -> None:
    """A /dev/shm too small for the pool (a 12 MiB tmpfs over /dev/shm in a
    private mount namespace; the real one is not touched)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and `unshare --mount` to mount a small tmpfs on /dev/shm")
    script = 'mount -t tmpfs -o size=12m tmpfs /dev/shm && exec "$0" -c "$1"'
    env = dict(os.environ, SHMRING_SUPERVISOR="0")  # no supervisor inside the namespace
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
         sys.executable, NO_ROOM], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_chunked_source_makes_no_pool(pname: str) -> None:
    """Chunks carry their arrays inside (chunk.py): a pool would be /dev/shm
    allocated for nothing."""
    p = shmring.Pipeline(pname)
    p.source((filled(i) for i in range(8)), chunksize=4).map(same, zero_copy=True,
                                                             max_bytes=16 << 20)
    with p.run() as run:
        assert run._pool is None
        assert sorted(intact(a) for a in run) == list(range(8))
    assert gone(pname)
