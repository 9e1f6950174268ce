"""A seeded SIGKILL storm over a pipeline's workers: run a pipeline while a
thread SIGKILLs random workers of random stages at random moments, then
check that every output came out exactly once (in order, for an ordered
run), that the run ended, and that nothing of it is left in /dev/shm."""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline_util import gone

import shmring
from shmring import _core
from shmring import _layout as L
from shmring._pipeline import board as B


def work(x: int) -> int:
    """A little CPU per item, so kills land mid-item too."""
    for _ in range(100):
        pass
    return x * 3


def fan(x: int) -> list[int]:
    """0, 1 or 2 outputs."""
    return [x, -x][: x % 3]


def keep(x: int) -> bool:
    """Drop a quarter."""
    return x % 4 != 1


def plus(x: int) -> int:
    """x + 1."""
    return x + 1


Build = Callable[[shmring.Stream, bool], Any]
Expect = Callable[[int], list[int]]

#: Random kills may hit one item many times (an item waiting for room in a
#: full edge is held by its worker): no item is given up as poison here.
R = 10**6

TOPOLOGIES: dict[str, tuple[Build, Expect]] = {
    # name: (build the stages on a stream, expected outputs for source x)
    "map-map": (lambda s, o: s.map(work, workers=3, ordered=o, max_redeliveries=R)
                .map(plus, workers=2, max_redeliveries=R),
                lambda x: [x * 3 + 1]),
    "bounded": (lambda s, o: s.map(work, workers=2, max_inflight=4, ordered=o,
                                   max_redeliveries=R)
                .map(plus, workers=2, max_inflight=2, max_bytes=4096, max_redeliveries=R),
                lambda x: [x * 3 + 1]),
    "flat-filter": (lambda s, o: s.flat_map(fan, workers=2, ordered=o, max_redeliveries=R)
                    .filter(keep, workers=2, max_redeliveries=R)
                    .map(work, workers=2, max_redeliveries=R),
                    lambda x: [v * 3 for v in fan(x) if keep(v)]),
}


@dataclass
class Outcome:
    """What one storm saw."""

    kills: int
    outputs: int
    lost: int
    duplicated: int
    in_order: bool
    dead_letters: int


def gated(items: int, first_kill: threading.Event) -> Iterator[int]:
    """0 .. items-1, holding back the second half until a worker has been
    killed, so that every storm kills mid-stream however fast the run is."""
    for x in range(items):
        if x == items // 2:
            first_kill.wait(30.0)
        yield x


def storm(name: str, topology: str, seed: int, items: int = 20000, kills: int = 15,
          ordered: bool = False, timeout: float = 120.0, chunksize: int = 1) -> Outcome:
    """Run one storm; raise AssertionError on a hang or a leak."""
    rng = random.Random(seed)
    build, expect = TOPOLOGIES[topology]
    p = shmring.Pipeline(name)
    first_kill = threading.Event()
    build(p.source(gated(items, first_kill), chunksize=chunksize), ordered)
    done = threading.Event()
    killed = [0]
    with p.run() as run:
        stages = p.stages

        def killer() -> None:
            while killed[0] < kills:
                if done.wait(rng.uniform(0.0005, 0.01)):
                    return
                live = [p for st in stages for p in run.pids(st)]
                pids = run.pids(rng.choice(stages)) or live
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        killed[0] += 1
                        first_kill.set()
                    except ProcessLookupError:
                        pass

        t = threading.Thread(target=killer)
        t.start()
        try:
            out = run.wait(timeout=timeout)  # Timeout: a hang
        except shmring.Timeout:
            raise AssertionError(f"the run hung:\n{describe(run)}") from None
        finally:
            done.set()
            t.join()
    assert gone(name), f"segments of {name} outlived the run"
    want = [v for x in range(items) for v in expect(x)]
    got_c, want_c = collections.Counter(out), collections.Counter(want)
    return Outcome(killed[0], len(out), sum((want_c - got_c).values()),
                   sum((got_c - want_c).values()), out == want, len(run.dead_letters))


def describe(run: Any) -> str:
    """What a hung run holds: each stage's edge (closed for sending?
    drained?, head, read claim, tail, redeliveries), its live workers and
    what each is on, and every taken slot of the edge with its pid and
    whether that process lives."""
    lines = []
    for st in run._stages:
        buf = st.channel.region._mapping()
        head, rc, tail = (_core.load(buf, o) for o in (L.OFF_HEAD, L.OFF_READ_CLAIM,
                                                        L.OFF_TAIL))
        lines.append(f"stage {st.index} {st.spec.name}: eos={st.eos} closed={st.closed} "
                     f"head={head} read_claim={rc} tail={tail} "
                     f"redeliver={_core.load(buf, L.OFF_REDELIVER)} deaths={st.deaths}")
        for entry, p in st.procs.items():
            lines.append(f"  worker {p.pid} alive={p.is_alive()} "
                         f"item={run._board.word(entry, B.ITEM)}")
        for i, pid, _start, _ns in st.channel.region.table.entries():
            so = L.slot_offset(i)
            lines.append(f"  slot {i} pid {pid} alive={os.path.exists(f'/proc/{pid}')} "
                         f"role={_core.load32(buf, so + L.SLOT_ROLE)} "
                         f"link_in={_core.load(buf, so + L.SLOT_LINK_IN)}")
    return "\n".join(lines)


def budget_seeds(budget: float) -> Iterator[int]:
    """Seeds 1, 2, ... until ``budget`` seconds have passed."""
    end = time.monotonic() + budget
    seed = 0
    while time.monotonic() < end:
        seed += 1
        yield seed
