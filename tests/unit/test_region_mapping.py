"""How a region is mapped: small regions are populated up front (no page
fault even on the first lap), large ones are not (their pages are allocated
at creation, so faulting them in later costs no SIGBUS, and creating or
opening a region of many GiB does not touch every page in every process).

Checked on the real mappings, through /proc/self/smaps (pages mapped into
this process), not by timing.
"""

from __future__ import annotations

from collections.abc import Callable

import shmring
from shmring._region.region import POPULATE_LIMIT

Make = Callable[..., shmring.Channel]


def mapped_kib(path: str) -> list[int]:
    """Resident KiB of each mapping of ``path`` in this process."""
    out: list[int] = []
    current = False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                current = line.rstrip("\n").endswith(path)
            elif current and first == "Rss:":
                out.append(int(line.split()[1]))
    return out


def shm_path(ch: shmring.Channel) -> str:
    return "/dev/shm/" + ch.region.segment.lstrip("/")


def test_a_small_region_is_populated(make_channel: Make) -> None:
    ch = make_channel("spsc", 1 << 20)
    (rss,) = mapped_kib(shm_path(ch))
    assert rss * 1024 >= 1 << 20, f"only {rss} KiB of a 1 MiB ring are mapped"


def test_a_large_region_is_not_populated_and_still_works(make_channel: Make) -> None:
    cap = 4 * POPULATE_LIMIT
    ch = make_channel("spsc", cap)
    path = shm_path(ch)
    (rss,) = mapped_kib(path)
    assert rss * 1024 < POPULATE_LIMIT // 4, f"{rss} KiB of a {cap >> 20} MiB ring are mapped"
    other = shmring.Channel.open(ch.name)
    try:
        assert all(k * 1024 < POPULATE_LIMIT // 4 for k in mapped_kib(path))
        tx, rx = ch.producer(), other.consumer()
        msg = bytes(range(256)) * 4096  # 1 MiB: pages faulted in as it goes
        for _ in range(8):
            tx.send(msg)
            assert rx.recv(timeout=5) == msg
    finally:
        other.close()


def test_populate_false_leaves_a_small_ring_to_first_touch(make_channel: Make) -> None:
    cap = 4 << 20
    ch = make_channel("spsc", cap, populate=False)
    path = shm_path(ch)
    (rss,) = mapped_kib(path)
    assert rss * 1024 < cap // 8, f"{rss} KiB of a {cap >> 20} MiB ring are mapped"
    lazy = shmring.Channel.open(ch.name, populate=False)
    eager = shmring.Channel.open(ch.name)
    try:
        # (smaps lists mappings by address, not in the order they were made)
        small, other, full = sorted(mapped_kib(path))
        assert other * 1024 < cap // 8, (small, other)
        assert full * 1024 >= cap, f"the default open mapped only {full} KiB"
        tx, rx = ch.producer(), lazy.consumer()
        msg = bytes(range(256)) * 1024  # 256 KiB: pages faulted in as they are used
        for _ in range(24):  # past the ring's end and round again
            tx.send(msg)
            assert rx.recv(timeout=5) == msg
        grown = mapped_kib(path)  # the producer's and the lazy reader's pages too
        assert all(k * 1024 >= cap // 2 for k in grown), grown
    finally:
        lazy.close()
        eager.close()


def test_pipeline_edges_are_not_populated(uname: str) -> None:
    from shmring._pipeline import edge as E

    ch = E.create(uname, 4 << 20, "mpmc", None)
    try:
        (rss,) = mapped_kib(shm_path(ch))
        assert rss * 1024 < 512 << 10, f"{rss} KiB of a new 4 MiB edge are mapped"
        other = E.attach(uname, None)
        try:
            assert all(k * 1024 < 512 << 10 for k in mapped_kib(shm_path(ch)))
        finally:
            other.close()
    finally:
        ch.close()
        ch.unlink()
