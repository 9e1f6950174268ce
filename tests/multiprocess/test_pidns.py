"""Liveness across PID namespaces (issue 18, item 1), with real namespaces.

A process in a container (here ``unshare -p --fork --mount-proc``, as
root; ``pidns_util.Agent``) records the pid it calls itself, which means
nothing on the host, and the other way round. These tests check that an
exclusive role a live process of the other namespace holds is never granted
again (both ways, every exclusive role); that once its holder is SIGKILLed
the role is free again on both sides (the supervisor, holding the holder's
pidfd, recovers it); that a supervisor's sweep, on either side, never
recovers or unlinks what a live process of the other namespace holds; and
that messages flow between the two.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pidns_util import EXCLUSIVE, Agent, wait_until
from supervisor_util import Env

import shmring
from shmring._proc import Census, holder_alive, my_start_time, pid_namespace
from shmring._region import inventory
from shmring._supervisor.server import Supervisor
from shmring.metrics import Registry

pytestmark = pytest.mark.timeout(120)

ROLE_IDS = [f"{p}-{'producer' if prod else 'consumer'}" for p, prod in EXCLUSIVE]


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    """Agents started by the test; all are killed at its end."""
    made: list[Agent] = []
    yield made
    for a in made:
        a.kill()


def _role(ch: shmring.Channel, producer: bool) -> shmring.Producer | shmring.Consumer:
    return ch.producer() if producer else ch.consumer()


def _refused(ch: shmring.Channel, producer: bool) -> str:
    """Ask ``ch`` for the role; it must be refused. The error's text."""
    with pytest.raises(shmring.RoleTaken) as e:
        _role(ch, producer)
    return str(e.value)


def _shm(ch: shmring.Channel) -> str:
    return "/dev/shm" + ch.region.segment


@pytest.mark.parametrize(("pattern", "producer"), EXCLUSIVE, ids=ROLE_IDS)
def test_role_held_across_namespaces(env: Env, uname: str, agents: list[Agent],
                                     pattern: str, producer: bool) -> None:
    """Container holds, host asks; host holds, container asks: RoleTaken
    every time while the holder lives, the role free on both sides once it
    is SIGKILLed."""
    ch = shmring.Channel.create(uname, capacity=4096, pattern=pattern)
    try:
        box = Agent(container=True)
        agents.append(box)
        assert box.pid == 1 and box.pidns != pid_namespace()
        box.ask(f"open {uname}")
        assert box.take(producer)
        # Host asks, twice (the second after a local recovery pass): taken.
        assert "another PID namespace" in _refused(ch, producer)
        assert ch.recover_dead() == 0
        _refused(ch, producer)
        assert (ch.producers if producer else ch.consumers) == 1
        host = Agent(container=False)
        agents.append(host)
        host.ask(f"open {uname}")
        assert not host.take(producer)

        box.kill()  # its pidfd tells the supervisor; its slot and role go
        wait_until(lambda: host.take(producer), 10, "the role to be free on the host")
        assert (ch.producers if producer else ch.consumers) == 1

        # Host holds, container asks.
        box2 = Agent(container=True)
        agents.append(box2)
        box2.ask(f"open {uname}")
        assert not box2.take(producer)
        assert box2.ask("counts") == ("1 0" if producer else "0 1")
        _refused(ch, producer)
        host.kill()
        wait_until(lambda: box2.take(producer), 10, "the role to be free in the container")
        _refused(ch, producer)  # and now the container's again
        box2.close()
        wait_until(lambda: not any(s.role != "attach" for s in ch.region.slots()), 10,
                   "the container's endpoint to go")
        _role(ch, producer).close()
    finally:
        ch.close()
        ch.unlink()


def test_traffic_between_namespaces(env: Env, uname: str, agents: list[Agent]) -> None:
    """A host producer and a container consumer (spsc), and a container
    producer and a host consumer (broadcast): every message arrives, in order."""
    one = shmring.Channel.create(uname + "-a", capacity=1 << 16, pattern="spsc")
    two = shmring.Channel.create(uname + "-b", capacity=1 << 16, pattern="broadcast")
    try:
        box = Agent(container=True)
        agents.append(box)
        box.ask(f"open {uname}-a")
        assert box.take(producer=False)
        tx = one.producer()
        msgs = [os.urandom(1 + i % 97) for i in range(150)]
        for m in msgs:
            tx.send(m, timeout=10)
        assert [bytes.fromhex(box.ask("recv")) for _ in msgs] == msgs

        box.ask("close")
        box.ask(f"open {uname}-b")
        rx = two.consumer()
        assert box.take(producer=True)
        for m in msgs:
            box.ask("send " + m.hex())
        assert [rx.recv(timeout=10) for _ in msgs] == msgs
        assert one.consumers == 0 and two.producers == 1
        tx.close()
        rx.close()
    finally:
        for ch in (one, two):
            ch.close()
            ch.unlink()


def test_census_translates_a_container(agents: list[Agent]) -> None:
    """From the host: a container's pid 1 is judged as the host process it
    is, a wrong start time is dead, and a namespace that is gone is dead;
    /proc alone (holder_alive) cannot tell and says so."""
    box = Agent(container=True)
    agents.append(box)
    with open(f"/proc/{box.host_pid}/stat", "rb") as f:
        data = f.read()
    start = int(data[data.rfind(b")") + 2:].split()[19])
    c = Census.take()
    assert c.complete and c.find(1, box.pidns) == box.host_pid
    assert c.judge(1, start, box.pidns) is True
    assert c.judge(1, start + 1, box.pidns) is False
    assert c.judge(os.getpid(), my_start_time(), pid_namespace()) is True
    assert holder_alive(1, start, box.pidns) is None
    ns = box.pidns
    box.kill()  # SIGKILLed, it still runs its exit for a while: then it is dead
    wait_until(lambda: Census.take().judge(1, start, ns) is False, 10,
               "the census to find the container gone")


def test_host_supervisor_keeps_unsupervised_container_slot(
        env: Env, uname: str, agents: list[Agent]) -> None:
    """A container process that never registers (SHMRING_SUPERVISOR=0) holds
    the only endpoint: the host supervisor's sweep, a restarted one's too,
    and gc's orphan rule keep the region; once it dies the supervisor
    recovers its slot and unlinks the region."""
    s = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0).start()
    try:
        ch = shmring.Channel.create(uname, capacity=4096, pattern="spsc")
        seg, path = ch.region.segment, _shm(ch)
        box = Agent(container=True, env={"SHMRING_SUPERVISOR": "0"})
        agents.append(box)
        box.ask(f"open {uname}")
        assert box.take(producer=False)
        tx = ch.producer()
        tx.send(b"before")
        tx.close()
        ch.close()  # the last registration: the supervisor judges the table
        assert os.path.exists(path), "the sweep unlinked a live container's region"
        assert box.ask("recv") == b"before".hex()

        s.stop()  # a restart: the new supervisor adopts the region and sweeps it
        s = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0).start()
        wait_until(lambda: not s.regions.in_grace(), 10, "the startup grace to end")
        s.call(s.regions.evaluate_all)
        assert os.path.exists(path)
        ns, name = seg[len("/shmring."):].split(".", 1)
        snap = inventory.snapshot(ns, name)
        assert inventory.verdict(snap) == "live"  # gc keeps it
        assert [(v.pid, v.pidns, v.alive) for v in snap.slots if v.role == "consumer"] == \
            [(1, box.pidns, True)]

        again = shmring.Channel.open(uname)
        _refused(again, producer=False)
        tx = again.producer()
        tx.send(b"after")
        assert box.ask("recv") == b"after".hex()
        tx.close()
        again.close()
        assert os.path.exists(path)

        box.kill()  # watched through the pidfd the sweep opened
        wait_until(lambda: not os.path.exists(path), 10, "the region to be unlinked")
    finally:
        s.stop()
        if os.path.exists(f"/dev/shm/shmring.{env.namespace}.{uname}"):
            shmring.Channel.open(uname, supervised=False).unlink()


def test_container_supervisor(env: Env, uname: str, agents: list[Agent]) -> None:
    """The supervisor runs in a container: host clients register with it
    (it cannot see them: their pidfds say when they die). A host holder's
    role is refused in the container, and free once the host holder dies;
    an unsupervised host process's slot, which it can neither see nor
    judge, is kept."""
    sup = Agent(container=True)
    agents.append(sup)
    sup.ask("supervise")
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpsc")
    try:
        host = Agent(container=False)
        agents.append(host)
        host.ask(f"open {uname}")
        assert host.take(producer=False)
        box = Agent(container=True)
        agents.append(box)
        box.ask(f"open {uname}")
        assert not box.take(producer=False)
        _refused(ch, producer=False)
        host.kill()
        wait_until(lambda: box.take(producer=False), 10, "the container supervisor to free it")
        tx = ch.producer()
        tx.send(b"to the box")
        assert box.ask("recv") == b"to the box".hex()
        tx.close()
        box.close()

        loner = Agent(container=False, env={"SHMRING_SUPERVISOR": "0"})
        agents.append(loner)
        loner.ask(f"open {uname}")
        assert loner.take(producer=False)
        path = _shm(ch)
        ch.close()  # the last registration: the container's supervisor sweeps
        assert os.path.exists(path), "a container supervisor unlinked a host process's region"
        ch = shmring.Channel.open(uname)
        _refused(ch, producer=False)
        loner.kill()
        # It cannot see this death (no registration, another namespace): the
        # host, which can, recovers the slot.
        assert ch.recover_dead() == 1  # its channel's slot, lent to its consumer
        _role(ch, producer=False).close()
    finally:
        ch.close()
        ch.unlink()
        sup.kill()


def test_hello_namespace_is_checked() -> None:
    """A client that claims another PID namespace than /proc shows for it is
    refused (its slots would be judged in the wrong one); one we cannot see
    is taken at its word."""
    from shmring._supervisor import procfs

    me = os.getpid()
    assert procfs.check_peer(me, my_start_time(), pid_namespace()) == (pid_namespace(), None)
    assert procfs.check_peer(me, my_start_time(), 0) == (pid_namespace(), None)
    assert procfs.check_peer(me, my_start_time(), pid_namespace() + 1)[1] == \
        "wrong PID namespace"
    assert procfs.check_peer(0, 5, 1234) == (1234, None)


def test_metrics_slabs_across_namespaces(agents: list[Agent]) -> None:
    """A metrics slab of a live process of the other namespace is never
    folded (its counts stay its own, its gauge counts); once it is SIGKILLed
    the host folds it (it sees the container's processes), and its counts
    stay in the totals. A container cannot see a host process: it presumes
    it alive and leaves its slab to the host."""
    name = f"m-{os.getpid()}-pidns"
    reg = Registry(name)
    try:
        box = Agent(container=True)
        agents.append(box)
        host = Agent(container=False)
        agents.append(host)
        box.ask(f"count {name} 5")
        host.ask(f"count {name} 7")

        def totals() -> tuple[float, float, int]:
            t = reg.read()
            got = {f.name: sum(float(s.value) for s in f.series) for f in t.families}
            return got.get("c", 0.0), got.get("g", 0.0), t.live

        for _ in range(3):
            assert reg.fold() == 0
            assert box.ask(f"fold {name}") == "0"
        assert totals() == (12.0, 2.0, 2)
        box.kill()
        wait_until(lambda: reg.fold() == 1, 10, "the host to fold the container's slab")
        assert totals() == (12.0, 1.0, 1)

        box2 = Agent(container=True)
        agents.append(box2)
        box2.ask(f"count {name} 1")
        host.kill()
        assert box2.ask(f"fold {name}") == "0"  # it cannot see the host: not its to judge
        wait_until(lambda: reg.fold() == 1, 10, "the host to fold the host agent's slab")
        assert totals() == (13.0, 1.0, 1)
    finally:
        reg.unlink()
        reg.close()
