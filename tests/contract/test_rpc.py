"""The request/response contract in one process (threads for the other
side): replies by id in any order, failures as RemoteError, timeouts that
say why, typed errors on misuse, replies to clients that are gone dropped
and counted without blocking. Real channels, real shared memory.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

import shmring
from shmring._rpc import Request, Requester, Responder


@pytest.fixture
def pair(uname: str) -> Iterator[tuple[Responder, Requester]]:
    """A server and a client of service ``uname``, closed at the end."""
    server = Responder(uname)
    client = Requester(uname)
    try:
        yield server, client
    finally:
        client.close()
        server.close()


def serve_in_thread(server: Responder, n: int) -> threading.Thread:
    """Answer ``n`` requests with ``payload * 2`` in another thread."""
    def run() -> None:
        for _ in range(n):
            req = server.recv(timeout=10)
            req.reply(req.payload * 2)
    t = threading.Thread(target=run)
    t.start()
    return t


class Point:
    """Not a plain value: goes by pickle."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    def __mul__(self, k: int) -> Point:
        return Point(self.x * k)


@pytest.mark.parametrize("payload", [21, "ab", (1, [2, {"k": b"v"}]), Point(4)],
                         ids=["int", "str", "nested", "pickled"])
def test_call_returns_the_reply(pair: tuple[Responder, Requester], payload: object) -> None:
    server, client = pair
    t = serve_in_thread(server, 1)
    assert client.call(payload, timeout=10) == payload * 2  # type: ignore[operator]
    t.join()
    assert server.stats["received"] == 1 and server.stats["replied"] == 1
    assert client.pending == [] and client.stray == 0


def test_out_of_order_replies_are_kept_until_asked(pair: tuple[Responder, Requester]) -> None:
    server, client = pair
    ids = [client.submit(x) for x in range(10)]
    assert client.pending == ids and len(set(ids)) == 10
    taken = [server.recv(timeout=5) for _ in range(10)]
    assert [r.id for r in taken] == ids
    for req in reversed(taken):
        assert req.reply(req.payload + 100) is True
    # Ask for the first (answered last): every other reply is filed on the way.
    assert client.result(ids[0], timeout=5) == 100
    assert [client.result(i, timeout=5) for i in ids[1:]] == list(range(101, 110))
    assert client.pending == []


def test_a_failure_comes_back_as_remote_error(pair: tuple[Responder, Requester]) -> None:
    server, client = pair
    rid = client.submit("x")
    req = server.recv(timeout=5)
    try:
        raise KeyError("missing thing")
    except KeyError as raised:
        req.fail(raised)
    with pytest.raises(shmring.RemoteError) as info:
        client.result(rid, timeout=5)
    err = info.value
    assert f"service {server.service!r} failed request {rid}" in str(err)
    assert "KeyError" in str(err) and "missing thing" in str(err)
    assert "Traceback" in err.remote_traceback and err.stage == server.service
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is shmring.RemoteError and back.remote_traceback == err.remote_traceback
    rid = client.submit("y")
    server.recv(timeout=5).fail("bad input")
    with pytest.raises(shmring.RemoteError, match="bad input"):
        client.result(rid, timeout=5)
    mine = shmring.RemoteError("exactly this", stage="s")
    rid = client.submit("z")
    server.recv(timeout=5).fail(mine)
    with pytest.raises(shmring.RemoteError, match=r"^exactly this$"):
        client.result(rid, timeout=5)
    assert server.stats["failed"] == 3


def test_timeout_says_no_server_is_attached(uname: str) -> None:
    with Requester(uname) as client:
        assert client.servers == 0
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout, match="no server is attached") as info:
            client.call(1, timeout=0.3)
        assert 0.3 <= time.monotonic() - t0 < 3
        assert info.value.timeout == 0.3 and info.value.channel == uname
        assert client.pending == []


def test_a_late_reply_to_a_timed_out_call_is_stray(pair: tuple[Responder, Requester]) -> None:
    server, client = pair
    with pytest.raises(shmring.Timeout, match="1 server attached"):
        client.call("slow", timeout=0.2)
    server.recv(timeout=5).reply("too late")
    t = serve_in_thread(server, 1)
    assert client.call(5, timeout=5) == 10
    t.join()
    assert client.stray == 1


def test_result_timeout_keeps_the_request_pending(pair: tuple[Responder, Requester]) -> None:
    server, client = pair
    rid = client.submit(3)
    with pytest.raises(shmring.Timeout):
        client.result(rid, timeout=0.1)
    assert client.pending == [rid]
    server.recv(timeout=5).reply(9)
    assert client.result(rid, timeout=5) == 9


def test_misuse_raises_typed_errors(pair: tuple[Responder, Requester], uname: str) -> None:
    server, client = pair
    with pytest.raises(shmring.InvalidArgument, match="not pending"):
        client.result(12345, timeout=1)
    rid = client.submit(1)
    req = server.recv(timeout=5)
    req.reply(2)
    with pytest.raises(shmring.InvalidArgument, match="already answered"):
        req.reply(3)
    with pytest.raises(shmring.InvalidArgument, match="already answered"):
        req.fail("no")
    assert client.result(rid, timeout=5) == 2
    with pytest.raises(shmring.InvalidArgument, match="not pending"):
        client.result(rid, timeout=1)
    with pytest.raises(shmring.Timeout, match="waiting for a message"):
        server.recv(timeout=0.05)
    for bad in ("", 7, "has space"):
        with pytest.raises(shmring.InvalidArgument):
            Requester(bad)  # type: ignore[arg-type]
    with pytest.raises(shmring.InvalidArgument):
        Responder(uname, reply_timeout=-1)
    with pytest.raises(shmring.RegionNotFound):
        Responder(uname + "-none", create=False)


def test_a_channel_of_another_pattern_is_not_a_service(make_channel: object, uname: str) -> None:
    ch = shmring.Channel.create(uname + "-spsc", capacity=4096, pattern="spsc")
    try:
        with pytest.raises(shmring.InvalidArgument, match="not the mpmc request channel"):
            Requester(uname + "-spsc")
        with pytest.raises(shmring.InvalidArgument, match="not the mpmc request channel"):
            Responder(uname + "-spsc")
    finally:
        ch.close()
        ch.unlink()


def test_closed_ends_raise_closed(uname: str) -> None:
    server = Responder(uname)
    client = Requester(uname)
    rid = client.submit(1)
    req = server.recv(timeout=5)
    client.close()
    client.close()  # idempotent
    for call in (lambda: client.submit(2), lambda: client.call(2, timeout=1),
                 lambda: client.result(rid, timeout=1)):
        with pytest.raises(shmring.Closed):
            call()
    server.close()
    with pytest.raises(shmring.Closed):
        server.recv(timeout=1)
    with pytest.raises(shmring.Closed):
        req.reply(1)


def test_a_reply_to_a_client_that_is_gone_is_dropped_at_once(
        pair: tuple[Responder, Requester], uname: str) -> None:
    server, client = pair
    other = Requester(uname)
    ids = [other.submit(i) for i in range(3)]
    taken = [server.recv(timeout=5) for _ in ids]
    assert taken[0].reply("first") is True  # opens and caches its producer
    assert server.stats["cached"] == 1
    other.close()
    t0 = time.monotonic()
    assert taken[1].reply("to nobody") is False
    assert taken[2].fail("to nobody") is False
    assert time.monotonic() - t0 < 0.5
    assert server.stats["dropped"] == 2 and server.stats["cached"] == 0
    t = serve_in_thread(server, 1)
    assert client.call(1, timeout=5) == 2  # and the server goes on
    t.join()


def test_a_full_reply_channel_drops_after_reply_timeout(uname: str) -> None:
    with Responder(uname, reply_timeout=0.05) as server, \
            Requester(uname, capacity=4096) as client:
        ids = [client.submit(i) for i in range(10)]
        t0 = time.monotonic()
        sent = [server.recv(timeout=5).reply(b"x" * 900) for _ in ids]
        assert sent[:3] == [True] * 3 and sent[-3:] == [False] * 3
        assert server.stats["dropped"] == sent.count(False)
        assert time.monotonic() - t0 < 0.05 * len(ids) + 1
        assert client.result(ids[0], timeout=5) == b"x" * 900


def test_a_reply_too_large_fails_the_request_and_raises(uname: str) -> None:
    with Responder(uname) as server, Requester(uname, capacity=4096) as client:
        rid = client.submit(0)
        req = server.recv(timeout=5)
        with pytest.raises(shmring.MessageTooLarge):
            req.reply(b"y" * 10_000)
        with pytest.raises(shmring.RemoteError, match="does not fit"):
            client.result(rid, timeout=5)


def test_records_that_are_not_requests_are_skipped(pair: tuple[Responder, Requester],
                                                   uname: str) -> None:
    server, client = pair
    raw = shmring.Channel.open(uname)
    try:
        tx = raw.producer()
        tx.send(b"\x00junk")
        tx.send_obj(("not", "a request"))
        rid = client.submit(4)
        req = server.recv(timeout=5)
        assert req.id == rid and server.stats["malformed"] == 2
        req.reply(8)
        assert client.result(rid, timeout=5) == 8
    finally:
        raw.close()


def test_requests_sent_before_the_server_starts_wait_for_it(uname: str) -> None:
    with Requester(uname) as client:
        ids = [client.submit(i) for i in range(3)]
        with Responder(uname, create=False) as server:
            t = serve_in_thread(server, 3)
            assert [client.result(i, timeout=5) for i in ids] == [0, 2, 4]
            t.join()


def test_a_request_is_answered_from_another_thread(pair: tuple[Responder, Requester]) -> None:
    server, client = pair
    rid = client.submit(6)
    req = server.recv(timeout=5)
    assert isinstance(req, Request) and not req.answered
    t = threading.Thread(target=req.reply, args=(60,))
    t.start()
    t.join()
    assert req.answered and "answered" in repr(req)
    assert client.result(rid, timeout=5) == 60


def test_a_rebuilt_request_answers_the_client(pair: tuple[Responder, Requester]) -> None:
    server, client = pair
    rid = client.submit("job")
    first = server.recv(timeout=5)
    again = server.request(first.reply_to, first.id)
    assert again.reply("done elsewhere") is True
    assert client.result(rid, timeout=5) == "done elsewhere"
    with pytest.raises(shmring.InvalidArgument):
        server.request(1, "x")  # type: ignore[arg-type]


def test_threads_share_one_requester(pair: tuple[Responder, Requester]) -> None:
    server, client = pair
    n_threads, per = 6, 40
    answers = serve_in_thread(server, n_threads * per)
    got: dict[int, list[int]] = {}

    def work(k: int) -> None:
        got[k] = [client.call(k * 1000 + i, timeout=10) for i in range(per)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers.join()
    assert got == {k: [2 * (k * 1000 + i) for i in range(per)] for k in range(n_threads)}
    assert client.stray == 0


def test_the_docstring_examples_run(tmp_path: object) -> None:
    """The examples of Requester, Responder and Request run as written, with
    the names the package will export them under."""
    from shmring._rpc import request, requester, responder
    for owner in (requester.Requester, responder.Responder, request.Request):
        doc = owner.__doc__ or ""
        block = textwrap.dedent(doc.split("Example::", 1)[1])
        script = ("import shmring, shmring._rpc as _r\n"
                  "for _n in ('Requester', 'Responder', 'Request'):\n"
                  "    if not hasattr(shmring, _n): setattr(shmring, _n, getattr(_r, _n))\n"
                  + block)
        ns = f"rpcdoc-{os.getpid()}-{owner.__name__}"
        env = dict(os.environ, SHMRING_NAMESPACE=ns, SHMRING_SUPERVISOR_IDLE="1")
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"{owner.__name__}:\n{done.stderr}"
        deadline = time.monotonic() + 10
        guard = f"shmring-supervisor.{os.geteuid()}.{ns}"  # gone once its supervisor exits
        while (left := [e for e in os.listdir("/dev/shm")
                        if e.startswith(f"shmring.{ns}.") or e == guard]):
            assert time.monotonic() < deadline, f"left in /dev/shm: {left}"
            time.sleep(0.05)
