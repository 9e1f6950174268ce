"""Request/response between real processes: many clients and several
servers on one service, a server SIGKILLed while it holds a request, replies
out of order, clients that die with requests outstanding. Each test runs in
a namespace of its own and checks that every segment of it is gone at the
end."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import random
import signal
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest
from jobd_util import assert_gone

import shmring
from shmring._rpc import Requester, Responder

CTX = mp.get_context("fork")
_count = itertools.count()


@pytest.fixture
def ns(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A namespace of this test's (for it and every child it forks); at the
    end, its segments must be gone within 10 s."""
    name = f"rpc-{os.getpid()}-{next(_count)}"
    monkeypatch.setenv("SHMRING_NAMESPACE", name)
    monkeypatch.setenv("SHMRING_SUPERVISOR_IDLE", "1")
    yield name
    assert_gone(name)


def _server(service: str, out: Connection) -> None:
    """Serve ``("add", a, b)`` until a ``"stop"``; send back the stats."""
    with Responder(service) as server:
        for req in server:
            if req.payload == "stop":
                req.reply(os.getpid())
                break
            try:
                _op, a, b = req.payload
            except ValueError as e:
                req.fail(e)
                continue
            req.reply((os.getpid(), a + b))
        out.send(server.stats)


def _client(service: str, k: int, n: int, out: Connection) -> None:
    with Requester(service) as client:
        got = [client.call(("add", k * 10_000, i), timeout=20) for i in range(n)]
    out.send(got)


def _start(target: Any, *args: Any) -> tuple[mp.process.BaseProcess, Connection]:
    parent, child = CTX.Pipe(duplex=False)
    p = CTX.Process(target=target, args=(*args, child))
    p.start()
    child.close()
    return p, parent


def _reap(procs: list[mp.process.BaseProcess]) -> None:
    for p in procs:
        p.join(20)
        if p.is_alive():
            p.kill()
            p.join(5)


def test_many_clients_and_several_servers(ns: str) -> None:
    service = f"many-{os.getpid()}"
    servers = [_start(_server, service) for _ in range(3)]
    clients = [_start(_client, service, k, 100) for k in range(4)]
    try:
        for k, (_p, conn) in enumerate(clients):
            assert conn.poll(30), f"client {k} gave no answer in 30 s"
            got = conn.recv()
            assert [total for _pid, total in got] == [k * 10_000 + i for i in range(100)]
            assert {pid for pid, _ in got} <= {p.pid for p, _ in servers}
        with Requester(service) as stopper:
            stopped = {stopper.call("stop", timeout=10) for _ in servers}
        assert stopped == {p.pid for p, _ in servers}
        stats = [conn.recv() for _p, conn in servers if conn.poll(10)]
        assert len(stats) == 3
        assert sum(s["received"] for s in stats) == 4 * 100 + 3
        assert sum(s["replied"] for s in stats) == 4 * 100 + 3
        assert sum(s["dropped"] for s in stats) == 0
    finally:
        _reap([p for p, _ in clients + servers])


def _hang_on_first(service: str, out: Connection) -> None:
    """Take one request, say so, then never answer."""
    with Responder(service) as server:
        req = server.recv(timeout=20)
        out.send(req.id)
        time.sleep(60)


def test_a_server_killed_mid_request_gives_a_clear_timeout(ns: str) -> None:
    service = f"killed-{os.getpid()}"
    with Requester(service) as client:
        rid = client.submit("hang")
        hung, took = _start(_hang_on_first, service)
        procs = [hung]
        try:
            assert took.poll(20) and took.recv() == rid
            assert client.servers == 1
            hung.kill()
            hung.join(10)
            t0 = time.monotonic()
            with pytest.raises(shmring.Timeout, match="no server is attached") as info:
                client.result(rid, timeout=1.0)
            assert 1.0 <= time.monotonic() - t0 < 5
            assert f"request {rid}" in str(info.value)
            # With a healthy server beside the one that hangs and dies.
            good, stats = _start(_server, service)
            procs.append(good)
            assert client.call(("add", 1, 2), timeout=20)[1] == 3
            # Started only now: a server that hangs on its first request
            # must not be the one that takes the "add" above.
            hung2, took2 = _start(_hang_on_first, service)
            procs.append(hung2)
            rid2 = None
            while rid2 is None:
                rid = client.submit("hang")
                # The healthy server may take it (and fail on its shape).
                if took2.poll(0.5):
                    rid2 = took2.recv()
                    assert rid2 == rid
                else:
                    with pytest.raises(shmring.RemoteError):
                        client.result(rid, timeout=10)
            hung2.kill()
            hung2.join(10)
            with pytest.raises(shmring.Timeout, match="1 server attached: the one that took "
                                                      "it may have died"):
                client.result(rid2, timeout=0.5)
            assert client.call(("add", 2, 2), timeout=20)[1] == 4
            assert client.call("stop", timeout=20) == good.pid
            assert stats.poll(10) and stats.recv()["dropped"] == 0
        finally:
            _reap(procs)


def _shuffled(service: str, n: int, seed: int, out: Connection) -> None:
    """Take ``n`` requests, answer them in a shuffled order."""
    with Responder(service) as server:
        taken = [server.recv(timeout=20) for _ in range(n)]
        random.Random(seed).shuffle(taken)
        for req in taken:
            req.reply(req.payload * 3)
        out.send([req.id for req in taken])


def test_replies_out_of_order_from_another_process(ns: str) -> None:
    service = f"order-{os.getpid()}"
    with Requester(service) as client:
        ids = [client.submit(i) for i in range(30)]
        p, conn = _start(_shuffled, service, 30, 7)
        try:
            answered = conn.recv() if conn.poll(20) else []
            assert sorted(answered) == ids and answered != ids
            assert [client.result(i, timeout=10) for i in ids] == [3 * i for i in range(30)]
            assert client.stray == 0
        finally:
            _reap([p])


def _submit_and_die(service: str, first: bool, out: Connection) -> None:
    client = Requester(service)
    if first:
        client.call(("add", 0, 0), timeout=20)  # the server now caches our channel
    for i in range(20):
        client.submit(("add", i, i))
    out.send(client.reply_to)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("cached", [False, True], ids=["unknown", "cached"])
def test_a_client_gone_does_not_stop_the_server(ns: str, cached: bool) -> None:
    service = f"gone-{os.getpid()}"
    server = Responder(service)
    try:
        dead, conn = _start(_submit_and_die, service, cached)
        if cached:
            server.recv(timeout=20).reply((0, 0))
        assert conn.poll(20)
        reply_to = conn.recv()
        dead.join(10)
        assert dead.exitcode == -signal.SIGKILL
        t0 = time.monotonic()
        answers = [server.recv(timeout=10).reply((os.getpid(), 0)) for _ in range(20)]
        assert answers == [False] * 20 and time.monotonic() - t0 < 2
        assert server.stats["dropped"] == 20
        # The server goes on with the next client, and lets the dead one's
        # channel go (its sweep closes it; the supervisor removes it).
        with Requester(service) as client:
            rid = client.submit(("add", 1, 1))
            server.recv(timeout=10).reply(2)
            assert client.result(rid, timeout=10) == 2
        deadline = time.monotonic() + 10
        while (f"shmring.{ns}.{reply_to}" in os.listdir("/dev/shm")
               or server.stats["cached"]):
            assert time.monotonic() < deadline, f"reply channels stayed: {server.stats}"
            with pytest.raises(shmring.Timeout):
                server.recv(timeout=0.2)  # an idle server sweeps too
    finally:
        server.close()
