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
