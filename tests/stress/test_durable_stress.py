"""The long run of the durable-subscription relay storm (``-m stress``):
relays (durable broadcast subscribers that record what they settle) are
SIGKILLed at random instants, not at chosen points: while reading ahead,
writing, settling, joining or adopting; each is started again at once. A
new seed (ring size, windows, kill times) per storm until a time budget
(``SHMRING_STORM_BUDGET`` seconds, 90 by default) is spent; every storm must
record every record exactly once, in order."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path

import pytest
from durable_util import keep_sending, relay, relayed
from pipeline_storm import budget_seeds

import shmring

CTX = get_context("fork")


@pytest.mark.stress
def test_relays_killed_at_random_instants(make_channel: Callable[..., shmring.Channel],
                                          uname: str, tmp_path: Path) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90"))
    runs = kills = 0
    for seed in budget_seeds(budget):
        rnd = random.Random(seed)
        n = 100000  # long enough for a dozen kills or more
        name = f"{uname}-{seed}"
        ch = make_channel("broadcast", 1 << (12 + seed % 4), name=name)
        log = tmp_path / f"relayed-{seed}"
        log.write_bytes(b"")
        r = CTX.Process(target=relay, args=(name, str(log), 64, 0), daemon=True)
        r.start()
        deadline = time.monotonic() + 20
        while ch.consumers != 1:
            assert time.monotonic() < deadline and r.is_alive()
            time.sleep(0.002)
        producer = CTX.Process(target=keep_sending, args=(name, n), daemon=True)
        producer.start()
        while producer.is_alive() or r.is_alive():
            if rnd.random() < 0.7:
                # Most kills once the relay holds the subscription (so the
                # stream moves on, within the 60 s hold); the rest at any
                # instant of its start (joining, adopting).
                holds = time.monotonic() + 20
                while (r.pid not in {s.pid for s in ch.region.slots() if s.role == "consumer"}
                       and r.is_alive() and time.monotonic() < holds):
                    time.sleep(0.001)
            time.sleep(rnd.uniform(0, 0.02))
            if not producer.is_alive():
                break
            assert r.pid is not None
            os.kill(r.pid, signal.SIGKILL)
            r.join(20)
            kills += 1
            r = CTX.Process(target=relay, args=(name, str(log), rnd.choice([1, 7, 64, 300]), 0),
                            daemon=True)
            r.start()
        producer.join(20)
        r.join(60)
        assert producer.exitcode == 0 and r.exitcode == 0, (producer.exitcode, r.exitcode)
        assert relayed(str(log)) == list(range(n)), f"seed {seed}"
        ch.close()
        ch.unlink()
        runs += 1
    assert runs
    print(f"{runs} storms, {kills} SIGKILLs of relays, nothing lost or repeated")
