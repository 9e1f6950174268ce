"""shmring.metrics across real processes: exact totals of concurrent
counting, dead processes folded (SIGKILL included) and their slabs reused,
and a folder SIGKILLed at each step of a fold, its successor finishing or
redoing the fold without losing or counting twice. The daemon as a program:
test_metrics_daemon.py."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from metrics_util import registries

import shmring.metrics as m
from shmring import _core
from shmring.metrics import Registry
from shmring.metrics import _layout as M
from shmring.metrics._table import _key
from shmring.metrics.registry import me

Make = Callable[..., Registry]


@pytest.fixture
def make_registry() -> Iterator[Make]:
    yield from registries()
CTX = mp.get_context("fork")
STEPS = ("copied", "adding", "added", "committed", "zeroed", "freed")


def counts(name: str, n: int, obs: float, gauge: float, die: bool) -> None:
    """A child's work: count n, observe, set a gauge; exit or be SIGKILLed."""
    reg = Registry(name)
    c = m.Counter("c", "x", ["k"], registry=reg)
    h = m.Histogram("h", "x", buckets=[1.0], registry=reg)
    g = m.Gauge("g", "x", registry=reg)
    for _ in range(n):
        c.labels("a").inc()
    c.labels("b").inc(n * 3)
    h.observe(obs)
    g.set(gauge)
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(0)


def run(target: Callable[..., None], *args: Any) -> int:
    p = CTX.Process(target=target, args=args)
    p.start()
    p.join(60)
    assert p.exitcode is not None
    return p.exitcode


def totals(reg: Registry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in reg.read().families:
        for s in f.series:
            key = f.name + "".join(s.values)
            out[key] = (s.buckets, s.sum) if f.kind == "histogram" else s.value
    return out


def owned(reg: Registry) -> int:
    return sum(1 for i in range(reg.geo.slabs) if reg.values.owner(i))


def test_concurrent_processes_count_exactly(make_registry: Make) -> None:
    reg = make_registry()
    start = CTX.Event()

    def child(k: int) -> None:
        r = Registry(reg.name)
        c = m.Counter("c", "x", ["k"], registry=r).labels("a")
        h = m.Histogram("h", "x", buckets=[1.0], registry=r)
        start.wait(30)
        for i in range(20000):
            c.inc()
            if i % 100 == 0:
                h.observe(k)
        os._exit(0)

    procs = [CTX.Process(target=child, args=(k,)) for k in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    t = totals(reg)
    assert t["ca"] == 80000
    assert t["h"] == ([400, 400], 200 * (0 + 1 + 2 + 3) * 1.0)
    assert owned(reg) == 0 and reg.read().folded == 4


def test_dead_processes_are_folded_and_their_slabs_reused(make_registry: Make) -> None:
    reg = make_registry(slabs=4)
    g = m.Gauge("g", "x", registry=reg)
    g.set(1.0)  # this process holds one slab: three for 60 children
    expect = 0
    for k in range(60):
        assert run(counts, reg.name, k, 0.5, 100.0, k % 3 == 0) in (0, -signal.SIGKILL)
        expect += k
    t = totals(reg)
    assert t["ca"] == expect and t["cb"] == 3 * expect
    assert t["h"] == ([60, 0], 30.0)
    assert t["g"] == 1.0  # the dead children's gauges are dropped, not summed
    assert owned(reg) == 1 and reg.read().folded == 60 and reg.read().live == 1


def test_when_every_slab_is_live_a_new_process_is_told(make_registry: Make) -> None:
    reg = make_registry(slabs=2)
    m.Counter("c", "x", registry=reg).inc()
    hold, release = CTX.Event(), CTX.Event()

    def holder() -> None:
        m.Counter("c", "x", registry=Registry(reg.name)).inc()
        hold.set()
        release.wait(30)
        os._exit(0)

    def newcomer() -> None:
        try:
            m.Counter("c", "x", registry=Registry(reg.name)).inc()
        except m.MetricsFull as e:
            os._exit(3 if e.what == "slabs" else 4)
        os._exit(0)

    p = CTX.Process(target=holder)
    p.start()
    assert hold.wait(30)
    assert run(newcomer) == 3  # MetricsFull, what="slabs"
    release.set()
    p.join(30)
    assert run(newcomer) == 0  # in the dead holder's slab
    assert totals(reg)["c"] == 3


def test_a_forked_child_counts_in_a_slab_of_its_own(make_registry: Make) -> None:
    reg = make_registry()
    c = m.Counter("c", "x", registry=reg)
    c.inc(10)

    def child() -> None:
        assert c.get() == 0  # not the parent's slab
        c.inc(5)
        os._exit(0 if c.get() == 5 else 1)

    assert run(child) == 0
    assert c.get() == 10 and totals(reg)["c"] == 15


def test_declarations_conflict_across_processes(make_registry: Make) -> None:
    reg = make_registry()

    def child() -> None:
        m.Histogram("x", "x", buckets=[1, 2], registry=Registry(reg.name))
        os._exit(0)

    assert run(child) == 0
    with pytest.raises(m.MetricConflict, match="histogram"):
        m.Histogram("x", "x", buckets=[1, 5], registry=reg)
    m.Histogram("x", "x", buckets=[1, 2], registry=reg).observe(1)


def test_an_entry_whose_writer_died_is_taken_back(make_registry: Make) -> None:
    reg = make_registry()
    index = zlib.crc32(_key(True, "lost", ())) % reg.geo.entries
    at = reg.geo.entry(index) + M.E_STATE * M.WORD

    def dies_writing() -> None:
        assert _core.cas(reg._buf, at, M.FREE, M.WRITING | me())
        os.kill(os.getpid(), signal.SIGKILL)

    assert run(dies_writing) == -signal.SIGKILL
    assert _core.load(reg._buf, at) & M.WRITING
    m.Counter("lost", "x", registry=reg).inc()
    assert reg.table.get(index) is not None and reg.table.get(index).name == "lost"  # type: ignore[union-attr]
    assert totals(reg)["lost"] == 1


_FOLDER = textwrap.dedent("""
    import os, signal, sys
    from shmring.metrics import Registry
    step = sys.argv[2]
    def hook(at):
        if at == step:
            os.kill(os.getpid(), signal.SIGKILL)
    Registry(sys.argv[1]).fold(hook=hook)
""")


def folder_killed_at(name: str, step: str) -> None:
    """A separate process folds, and SIGKILLs itself at ``step``."""
    done = subprocess.run([sys.executable, "-c", _FOLDER, name, step], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr


def three_dead(reg: Registry) -> int:
    """Three children that counted and died, left unfolded; what they counted."""
    for k in (3, 5, 7):
        assert run(counts, reg.name, k, 2.0, 1.0, k == 5) in (0, -signal.SIGKILL)
    assert owned(reg) == 3
    return 15


@pytest.mark.parametrize("step", STEPS)
def test_a_folder_killed_at_any_step_loses_and_doubles_nothing(make_registry: Make,
                                                               step: str) -> None:
    reg = make_registry()
    n = three_dead(reg)
    folder_killed_at(reg.name, step)
    # The kill landed where asked: committed or not, slab freed or not, and
    # the dead folder still holds the lock.
    seq = _core.load(reg._buf, reg.geo.head(M.H_FOLD_SEQ))
    assert seq == (1 if step in ("committed", "zeroed", "freed") else 0)
    assert owned(reg) == (2 if step == "freed" else 3)
    assert _core.load(reg._buf, reg.geo.head(M.H_FOLD_LOCK)) != 0
    t = totals(reg)  # this read takes the dead folder's lock and finishes or redoes
    assert (t["ca"], t["cb"], t["h"]) == (n, 3 * n, ([0, 3], 6.0))
    assert owned(reg) == 0 and reg.read().folded == 3


@pytest.mark.parametrize("steps", [("committed", "zeroed"), ("adding", "committed", "freed"),
                                   ("zeroed", "copied", "added")])
def test_folders_killed_one_after_another(make_registry: Make, steps: tuple[str, ...]) -> None:
    reg = make_registry()
    n = three_dead(reg)
    for step in steps:
        folder_killed_at(reg.name, step)
    run(counts, reg.name, 10, 0.5, 1.0, True)  # one more death meanwhile
    t = totals(reg)
    assert (t["ca"], t["cb"], t["h"]) == (n + 10, 3 * (n + 10), ([1, 3], 6.5))
    assert owned(reg) == 0 and reg.read().folded == 4


def test_a_live_process_is_never_folded(make_registry: Make) -> None:
    reg = make_registry()
    c = m.Counter("c", "x", registry=reg)
    c.inc(7)
    for _ in range(3):
        assert reg.fold() == 0
    c.inc()
    assert totals(reg)["c"] == 8 and reg.read().folded == 0
