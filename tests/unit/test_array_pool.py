"""The pipeline's array pool (src/shmring/_pipeline/arrays.py): its slot
allocator, alone and raced by processes, and its pooled records, good and
corrupt."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import struct
from collections.abc import Iterator
from typing import Any

import pytest

import shmring
from shmring import _core
from shmring._pipeline import arrays as A

np = pytest.importorskip("numpy")

_count = iter(range(10**6))


@pytest.fixture
def pool() -> Iterator[A.ArrayPool]:
    p = A.ArrayPool.create(f"pool-{os.getpid()}-{next(_count)}", 1 << 23, None)  # 127 slots
    try:
        yield p
    finally:
        p.channel.unlink()
        p.close()


def encoded(obj: Any) -> tuple[Any, list[pickle.PickleBuffer]]:
    buffers: list[pickle.PickleBuffer] = []
    return pickle.dumps(obj, 5, buffer_callback=buffers.append), buffers


def record(pool: A.ArrayPool, obj: Any, held: list[A.Alloc] | None = None,
           moved: list[A.Alloc] | None = None, fresh: bool = True) -> tuple[bytearray, Any]:
    data, buffers = encoded(obj)
    plan = pool.plan(data, buffers, held or [], moved if moved is not None else [], fresh)
    out = bytearray(plan.size)
    plan.write(memoryview(out))
    return out, plan


def test_alloc_takes_the_first_free_run_and_free_gives_it_back(pool: A.ArrayPool) -> None:
    assert pool.slots == 127 and pool.used() == 0
    a = pool.alloc(1)
    b = pool.alloc(A.SLOT * 3)
    c = pool.alloc(A.SLOT * 3 + 1)
    assert (a, b, c) == ((0, 1), (1, 3), (4, 4))
    assert pool.used() == 8
    pool.free(b)
    assert pool.alloc(A.SLOT * 4) == (8, 4)  # the hole of 3 is too small
    assert pool.alloc(A.SLOT * 2) == (1, 2)
    # A run across bitmap words (slots 60..69).
    pool.free((1, 2))
    assert pool.alloc(A.SLOT * 48) == (12, 48)
    assert pool.alloc(A.SLOT * 10) == (60, 10)
    assert pool.used() == 1 + 4 + 4 + 48 + 10


def test_alloc_says_none_when_full_or_too_large(pool: A.ArrayPool) -> None:
    assert pool.alloc(A.SLOT * 128) is None
    whole = pool.alloc(A.SLOT * 127)
    assert whole == (0, 127)
    assert pool.alloc(1) is None
    pool.free(whole)
    assert pool.used() == 0 and pool.alloc(1) == (0, 1)


def _race(name: str, rounds: int, seed: int, q: Any) -> None:
    import random

    pool = A.ArrayPool.open(name, None)
    rng = random.Random(seed)
    mine = os.getpid().to_bytes(8, "little")
    bad = 0
    for _ in range(rounds):
        alloc = pool.alloc(A.SLOT * rng.randint(1, 9))
        if alloc is None:
            continue
        lo = pool.base + alloc[0] * A.SLOT
        hi = lo + alloc[1] * A.SLOT
        for at in range(lo, hi, A.SLOT):
            pool.view[at:at + 8] = mine
        for at in range(lo, hi, A.SLOT):  # nobody else was given these slots
            bad += pool.view[at:at + 8] != mine
        pool.free(alloc)
    pool.close()
    q.put(bad)


def test_processes_racing_never_share_a_slot(pool: A.ArrayPool) -> None:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(pool.channel.name, 3000, s, q)) for s in range(4)]
    for p in procs:
        p.start()
    bad = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert bad == [0, 0, 0, 0]
    assert pool.used() == 0


def test_a_large_array_travels_in_slots_and_a_small_one_in_the_record(pool: A.ArrayPool) -> None:
    big, small = np.arange(100_000, dtype=np.float64), np.arange(10, dtype=np.int32)
    body, plan = record(pool, {"big": big, "small": small})
    assert len(body) < 4096  # the 800 KB are in the pool
    plan.commit()
    plan.release()
    assert pool.used() == 13
    obj, allocs = pool.decode(memoryview(body), views=True)
    assert allocs == [(0, 13)]
    assert (obj["big"] == big).all() and (obj["small"] == small).all()
    assert not obj["big"].flags.writeable
    copy, _ = pool.decode(memoryview(body), views=False)
    assert copy["big"].flags.writeable and (copy["big"] == big).all()
    assert not np.shares_memory(copy["big"], obj["big"])
    del obj
    pool.free(allocs[0])
    assert pool.used() == 0


def test_an_array_in_a_held_allocation_goes_by_reference(pool: A.ArrayPool) -> None:
    body, plan = record(pool, np.ones(50_000))
    plan.commit()
    plan.release()
    view, held = pool.decode(memoryview(body), views=True)
    moved: list[A.Alloc] = []
    again, plan2 = record(pool, view[100:], held, moved)
    assert moved == []  # not until committed
    plan2.commit()
    plan2.release()
    assert moved == held and pool.used() == held[0][1] == 7
    out, allocs = pool.decode(memoryview(again), views=True)
    assert allocs == held
    assert _core.address(out) == _core.address(view) + 100 * 8  # the same bytes


def test_a_plan_not_committed_frees_its_new_slots(pool: A.ArrayPool) -> None:
    _, plan = record(pool, np.ones(50_000))
    assert pool.used() == 7
    plan.release()
    assert pool.used() == 0


def test_a_full_pool_puts_the_array_in_the_record(pool: A.ArrayPool) -> None:
    whole = pool.alloc(A.SLOT * 127)
    assert whole is not None
    a = np.arange(50_000, dtype=np.float64)
    body, plan = record(pool, a)
    plan.commit()
    plan.release()
    assert len(body) > a.nbytes
    obj, allocs = pool.decode(memoryview(body), views=False)
    assert allocs == [] and (obj == a).all()
    pool.free(whole)


def _corrupt(body: bytearray, entry_field: int, value: int) -> bytearray:
    out = bytearray(body)
    struct.pack_into("<Q", out, 16 + 8 * entry_field, value)
    return out


def test_corrupt_pooled_records_are_decode_errors(pool: A.ArrayPool) -> None:
    body, plan = record(pool, np.ones(50_000))
    plan.commit()
    plan.release()
    cases = {
        "short": body[:10],
        "magic": b"\x00SRX" + body[4:],
        "payload": body[:8] + struct.pack("<Q", 1 << 40) + body[16:],
        "slots": _corrupt(body, 3, 120 << 32 | 20),  # past the pool's 127 slots
        "outside": _corrupt(body, 0, 64 * A.SLOT),  # past its own 7 slots
    }
    for what, bad in cases.items():
        with pytest.raises(shmring.DecodeError):
            pool.decode(memoryview(bytes(bad)), views=False)
            pytest.fail(f"{what}: decoded")
    inline = _corrupt(body, 2, 0)  # says in the record, where nothing is
    with pytest.raises(shmring.DecodeError):
        pool.decode(memoryview(bytes(inline)), views=False)
