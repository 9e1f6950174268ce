"""Exclusive roles across PID namespaces, randomized (``-m stress``): seed
after seed, until a time budget (``SHMRING_STORM_BUDGET`` seconds, 60 by
default) is spent. Each seed picks an exclusive role and runs agents on both
sides (containers made by ``unshare -p --fork --mount-proc`` and host
processes, ``pidns_util.Agent``), which ask for the role, release it, pass
messages and get SIGKILLed at random. The invariants:

- while a live agent holds the role, every other ask (an agent's, on either
  side, or this process's) is refused with RoleTaken;
- once the holder released it, the next ask is granted at once; once it was
  SIGKILLed, an ask is granted within 10 s (the supervisor, through the
  holder's pidfd, recovers its slot);
- a message sent through the role's endpoint arrives (a holding consumer
  receives what this process sends; a holding producer's message reaches a
  consumer of this process);
- at the end the region is unlinked and nothing is left in /dev/shm.
"""

from __future__ import annotations

import os
import random
import time

import pytest
from pidns_util import EXCLUSIVE, Agent, wait_until
from supervisor_util import supervisor_env

import shmring

BUDGET = float(os.environ.get("SHMRING_STORM_BUDGET", "60"))
STEPS = 14


def _seed(uname: str, seed: int, stats: dict[str, int]) -> None:
    rng = random.Random(seed)
    pattern, producer = rng.choice(EXCLUSIVE)
    ch = shmring.Channel.create(f"{uname}-{seed}", capacity=1 << 12, pattern=pattern)
    agents: list[Agent] = []
    try:
        # This process takes the other side's role, where there is one to
        # take: a consumer beside a held producer, a producer beside a held consumer.
        other = ch.consumer() if producer else ch.producer()

        def spawn() -> Agent:
            a = Agent(container=rng.random() < 0.6)
            agents.append(a)
            a.ask(f"open {ch.name}")
            stats["containers" if a.container else "hosts"] += 1
            return a

        for _ in range(3):
            spawn()
        holder: Agent | None = None
        for step in range(STEPS):
            action = rng.choice(("ask", "ask", "kill", "release", "traffic", "self"))
            free = [a for a in agents if a is not holder]
            if action == "ask" and free:
                a = rng.choice(free)
                if holder is None:
                    # Free, or its holder was killed: granted, at once or once
                    # the supervisor has recovered the holder's slot.
                    wait_until(lambda a=a: a.take(producer), 10,
                               f"seed {seed} step {step}: the role to be granted")
                    holder = a
                    stats["granted"] += 1
                else:
                    assert not a.take(producer), f"seed {seed} step {step}: granted twice"
                    stats["refused"] += 1
            elif action == "self" and holder is not None:
                with pytest.raises(shmring.RoleTaken):
                    ch.producer() if producer else ch.consumer()
                stats["refused"] += 1
            elif action == "kill" and agents:
                a = rng.choice(agents)
                a.kill()
                agents.remove(a)
                stats["killed"] += 1
                if a is holder:
                    holder = None
                    stats["holders_killed"] += 1
                spawn()
            elif action == "release" and holder is not None:
                holder.ask("release")
                nxt = rng.choice(agents)
                assert nxt.take(producer), f"seed {seed} step {step}: released, not granted"
                holder = nxt
                stats["released"] += 1
            elif action == "traffic" and holder is not None:
                msg = rng.randbytes(rng.randrange(1, 200))
                if producer:
                    holder.ask("send " + msg.hex())
                    assert isinstance(other, shmring.Consumer)
                    assert other.recv(timeout=10) == msg
                else:
                    assert isinstance(other, shmring.Producer)
                    other.send(msg, timeout=10)
                    assert bytes.fromhex(holder.ask("recv")) == msg
                stats["messages"] += 1
        other.close()
    finally:
        for a in agents:
            a.kill()
        path = "/dev/shm" + ch.region.segment
        ch.close()
        ch.unlink()
    wait_until(lambda: not os.path.exists(path), 10, "the region to go")


@pytest.mark.stress
@pytest.mark.timeout(BUDGET + 300)
def test_pidns_roles_many_seeds(monkeypatch: pytest.MonkeyPatch, uname: str) -> None:
    stats = dict.fromkeys(("containers", "hosts", "granted", "refused", "killed",
                           "holders_killed", "released", "messages"), 0)
    end = time.monotonic() + BUDGET
    seed = 0
    while time.monotonic() < end:
        seed += 1
        with supervisor_env(monkeypatch):
            _seed(uname, seed, stats)
    print(f"pidns stress: {seed} seeds, {stats}")
    assert stats["refused"] > 0 and stats["granted"] > 0
