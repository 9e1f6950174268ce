"""The long run of slow subscribers (``-m stress``): lossless broadcast with a
``slow_consumer_timeout``, random subscribers stopped (SIGSTOP) and
continued (SIGCONT) at random while the producer sends, trial after trial
with a new seed each, until ``SHMRING_STORM_BUDGET`` seconds (90 by
default) are spent.

Each trial checks, for every subscriber, received + missed == sent exactly
(``missed`` equal to the numbers it never got), no torn and no out-of-order
message; and that the producer never waits longer than the timeout for
each subscriber stopped meanwhile, plus a margin (no hang).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

import pytest
from supervisor_util import Child
from untether_util import SIZES, Report, check_report, cont, message, stop, subscribe

import shmring

MARGIN = 1.5  # scheduling on 2 shared cores, and the producer's look interval
WAYS = ("recv", "recv_view", "recv_many", "recv_into")


def _subscriber(name: str, path: str, ways: tuple[str, ...]) -> Callable[[Child], None]:
    def run(c: Child) -> None:
        subscribe(c, name, path, ways=ways)
    return run


def trial(name: str, tmp: str, seed: int) -> tuple[int, int, int, int]:
    """One seeded trial; (sent, stops, untethered, missed) in all."""
    rng = random.Random(seed)
    timeout = rng.choice((0.15, 0.25, 0.4))
    ch = shmring.Channel.create(name, capacity=rng.choice((4096, 8192)), pattern="broadcast",
                                supervised=False, slow_consumer_timeout=timeout)
    try:
        return _run(ch, tmp, rng, timeout)
    finally:
        ch.close()
        ch.unlink()


def _run(ch: shmring.Channel, tmp: str, rng: random.Random,
         timeout: float) -> tuple[int, int, int, int]:
    tx = ch.producer()
    subs: list[tuple[Child, str]] = []
    for k in range(rng.randint(2, 4)):
        path = os.path.join(tmp, f"r{k}")
        ways = tuple(rng.sample(WAYS, rng.randint(1, len(WAYS))))
        subs.append((Child(_subscriber(ch.name, path, ways)), path))
    for c, _ in subs:
        c.ready()
    stops: list[tuple[int, float, float]] = []  # (subscriber, stopped at, continued at)
    done = threading.Event()
    crng = random.Random(rng.random())

    def controller() -> None:
        stopped: dict[int, tuple[float, int]] = {}  # subscriber -> (continue at, index in stops)
        while not done.is_set() or stopped:
            for k, (until, j) in list(stopped.items()):
                if time.monotonic() >= until or done.is_set():
                    cont(subs[k][0].pid)
                    stops[j] = (k, stops[j][1], time.monotonic())
                    del stopped[k]
            if not done.is_set() and len(stopped) < 2 and crng.random() < 0.3:
                k = crng.randrange(len(subs))
                if k not in stopped:
                    stops.append((k, time.monotonic(), float("inf")))
                    stop(subs[k][0].pid)
                    stopped[k] = (time.monotonic() + crng.uniform(0.02, 3 * timeout),
                                  len(stops) - 1)
            done.wait(crng.uniform(0.01, 0.1))  # the storm's own pace, not a wait for a result

    ctl = threading.Thread(target=controller, daemon=True)
    ctl.start()
    sent = 0
    until = time.monotonic() + rng.uniform(2.0, 4.0)
    waits: list[tuple[float, float]] = []
    try:
        while time.monotonic() < until:
            m = message(sent, rng.choice(SIZES))
            t0 = time.monotonic()
            tx.send(m, timeout=len(subs) * timeout + 30)
            t1 = time.monotonic()
            if t1 - t0 > 0.1:
                waits.append((t0, t1))
            sent += 1
    finally:
        done.set()
        ctl.join(30)
    assert not ctl.is_alive()
    ch.close_send()
    for t0, t1 in waits:
        overlapping = {k for k, a, b in stops if a <= t1 and b >= t0}
        assert t1 - t0 <= len(overlapping) * timeout + MARGIN, (
            f"the producer waited {t1 - t0:.2f} s with {len(overlapping)} subscriber(s) "
            f"stopped meanwhile (timeout {timeout} s)")
    untethered = missed = 0
    for k, (c, path) in enumerate(subs):
        assert c.wait(60) == 0, "a subscriber failed (its traceback is above)"
        r = Report.load(path)
        check_report(r, sent, f"subscriber {k}")
        untethered += r.untethered
        missed += r.missed
    return sent, len(stops), untethered, missed


@pytest.mark.stress
def test_untether_storm_many_seeds(uname: str, tmp_path: object) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90"))
    end = time.monotonic() + budget
    seed = 0
    totals = [0, 0, 0, 0]
    while time.monotonic() < end:
        seed += 1
        d = os.path.join(str(tmp_path), f"s{seed}")
        os.mkdir(d)
        for j, v in enumerate(trial(f"{uname}-{seed}", d, seed)):
            totals[j] += v
    print(f"\nuntether storm: {seed} trials, {totals[0]} messages sent, {totals[1]} stops, "
          f"{totals[2]} untetherings, {totals[3]} messages missed (all counted exactly)")
    assert seed >= 1 and totals[0] > 0
