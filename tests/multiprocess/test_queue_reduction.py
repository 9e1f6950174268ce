"""Items are pickled as multiprocessing pickles them (``_queue/reduce.py``):
a Connection and a socket put into a queue arrive in a spawned child as
working objects, as through ``multiprocessing.Queue`` (plain pickle sent a
Connection as its bare descriptor number, which in the child named the
queue's own region, so the child's first send corrupted it). What cannot
travel raises in ``put`` and leaves the queue as it was; a reducer
registered after the first put is used for the next.
"""

from __future__ import annotations

import copyreg
import multiprocessing as mp
import socket
from collections.abc import Callable
from typing import Any

import pytest

import shmring

SPAWN = mp.get_context("spawn")


def _use_connection(q: shmring.Queue[Any], done: shmring.Queue[Any]) -> None:
    conn = q.get(timeout=30)
    conn.send(("from the child", 42))
    done.put("sent")


def _use_socket(q: shmring.Queue[Any], done: shmring.Queue[Any]) -> None:
    sock = q.get(timeout=30)
    sock.sendall(b"over the socket")
    sock.close()
    done.put("sent")


def _run(target: Callable[..., None], q: shmring.Queue[Any], done: shmring.Queue[Any]) -> None:
    p = SPAWN.Process(target=target, args=(q, done))
    p.start()
    try:
        assert done.get(timeout=60) == "sent"
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join()
    assert p.exitcode == 0


def test_a_connection_travels_to_a_spawned_child(make_queue: Callable[..., Any]) -> None:
    q, done = make_queue(), make_queue()
    here, there = mp.Pipe()
    q.put(there)
    _run(_use_connection, q, done)
    assert here.poll(30) and here.recv() == ("from the child", 42)
    # The queue's own regions are intact: it still works, and opens by name.
    q.put({"after": 1})
    again = shmring.Queue.open(q.name)
    try:
        assert again.get(timeout=10) == {"after": 1}
    finally:
        again.close()


def test_a_socket_travels_to_a_spawned_child(make_queue: Callable[..., Any]) -> None:
    q, done = make_queue(), make_queue()
    a, b = socket.socketpair()
    try:
        q.put(b)
        _run(_use_socket, q, done)
        a.settimeout(30)
        assert a.recv(100) == b"over the socket"
    finally:
        a.close()
        b.close()


def test_what_cannot_travel_raises_in_put(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    with pytest.raises(RuntimeError, match="inheritance"):
        q.put(mp.Lock())  # as multiprocessing says of it
    q.put("still works")
    assert q.get(timeout=10) == "still works"


class _Point:
    def __init__(self, x: int) -> None:
        self.x = x


def _as_tuple(p: _Point) -> tuple[Any, ...]:
    return (tuple, ((p.x, "reduced"),))


def test_a_reducer_registered_later_is_used(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    q.put(_Point(1))
    first = q.get(timeout=10)
    assert isinstance(first, _Point) and first.x == 1
    copyreg.pickle(_Point, _as_tuple)
    try:
        q.put(_Point(2))
        assert q.get(timeout=10) == (2, "reduced")
    finally:
        del copyreg.dispatch_table[_Point]
    q.put(_Point(3))
    assert isinstance(q.get(timeout=10), _Point)
