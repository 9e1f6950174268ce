"""Every error of an endpoint's call names its channel and carries what a
user needs to act on it, in the text and as attributes: the timeout, the
message size and the limit, the pid holding an exclusive role.

The C endpoints know their channel's name from construction; the texts are
built on the error path only (the hot path is unchanged).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import queue
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import shmring

Make = Callable[..., shmring.Channel]


def _label(ch: shmring.Channel) -> str:
    return f"channel {ch.name!r} ({ch.pattern}, {ch.capacity} bytes)"


# ------------------------------------------------------------- timeouts --


@pytest.mark.parametrize("call", ["recv", "recv_many", "recv_into", "recv_view", "recv_obj"])
def test_receive_timeout_names_the_channel(make_channel: Make, call: str) -> None:
    ch = make_channel()
    rx = ch.consumer()
    calls: dict[str, Callable[[], object]] = {
        "recv": lambda: rx.recv(timeout=0.05),
        "recv_many": lambda: rx.recv_many(4, timeout=0.05),
        "recv_into": lambda: rx.recv_into(bytearray(16), timeout=0.05),
        "recv_view": lambda: rx.recv_view(timeout=0.05),
        "recv_obj": lambda: rx.recv_obj(timeout=0.05),
    }
    with pytest.raises(shmring.Timeout) as info:
        calls[call]()
    e = info.value
    assert str(e) == f"timed out after 0.05 s waiting for a message in {_label(ch)}"
    assert (e.channel, e.timeout) == (ch.name, 0.05)


@pytest.mark.parametrize("call", ["send", "claim", "send_obj", "send_many"])
def test_send_timeout_names_the_channel(make_channel: Make, call: str) -> None:
    ch = make_channel(capacity=4096)
    tx = ch.producer()
    while True:  # fill it
        try:
            tx.send_nowait(b"x" * 900)
        except shmring.WouldBlock:
            break
    calls: dict[str, Callable[[], object]] = {
        "send": lambda: tx.send(b"x" * 900, timeout=0.05),
        "claim": lambda: tx.claim(900, timeout=0.05),
        "send_obj": lambda: tx.send_obj(b"x" * 900, timeout=0.05),
        "send_many": lambda: tx.send_many([b"x" * 900], timeout=0.05),
    }
    with pytest.raises(shmring.Timeout) as info:
        calls[call]()
    e = info.value
    assert str(e) == (f"timed out after 0.05 s waiting for space in {_label(ch)}: no live "
                      "consumer is attached (none has opened it yet, or every one closed or died)")
    assert (e.channel, e.timeout) == (ch.name, 0.05)


def test_async_timeouts_name_the_channel(make_channel: Make) -> None:
    ch = make_channel()
    rx = ch.consumer()

    async def main() -> None:
        await rx.recv_async(timeout=0.05)

    with pytest.raises(shmring.Timeout) as info:
        asyncio.run(main())
    assert str(info.value) == f"timed out after 0.05 s waiting for a message in {_label(ch)}"
    assert (info.value.channel, info.value.timeout) == (ch.name, 0.05)


def test_nowait_errors_name_the_channel(make_channel: Make) -> None:
    ch = make_channel()
    tx, rx = ch.producer(), ch.consumer()
    with pytest.raises(shmring.WouldBlock) as info:
        rx.recv_nowait()
    assert (str(info.value), info.value.channel) == (f"{_label(ch)} is empty", ch.name)
    while True:
        try:
            tx.send_nowait(b"x" * 900)
        except shmring.WouldBlock as e:
            assert (str(e), e.channel) == (f"{_label(ch)} is full", ch.name)
            break


def test_nowait_object_errors_name_the_channel(make_channel: Make) -> None:
    """The object paths that fall back to Python (buffers out of band, a
    held view) word their refusals as the C paths do."""
    ch = make_channel()
    tx, rx = ch.producer(), ch.consumer()
    with pytest.raises(shmring.WouldBlock) as info:
        rx.recv_obj_nowait(copy=False)
    assert (str(info.value), info.value.channel) == (f"{_label(ch)} is empty", ch.name)
    with pytest.raises(shmring.WouldBlock) as info:
        for _ in range(1000):
            tx.send_obj_nowait(np.zeros(100))
    assert (str(info.value), info.value.channel) == (f"{_label(ch)} is full", ch.name)


# ------------------------------------------------------------ too large --


@pytest.mark.parametrize("call", ["send", "claim", "send_obj", "send_nowait"])
def test_too_large_says_size_and_limit(make_channel: Make, call: str) -> None:
    ch = make_channel(capacity=4096)
    tx = ch.producer()
    big = b"x" * 5000
    calls: dict[str, Callable[[], object]] = {
        "send": lambda: tx.send(big), "claim": lambda: tx.claim(5000),
        "send_obj": lambda: tx.send_obj(big), "send_nowait": lambda: tx.send_nowait(big)}
    with pytest.raises(shmring.MessageTooLarge) as info:
        calls[call]()
    e = info.value
    if call != "send_obj":  # a pickled object is a little larger than its bytes
        assert str(e) == f"message of 5000 bytes exceeds channel {ch.name!r} max_message 1008"
        assert e.size == 5000
    assert f"exceeds channel {ch.name!r} max_message 1008" in str(e)
    assert (e.channel, e.limit) == (ch.name, ch.max_message)


def test_attributes_survive_pickling(make_channel: Make) -> None:
    ch = make_channel()
    with pytest.raises(shmring.MessageTooLarge) as info:
        ch.producer().send(b"x" * 5000)
    e = pickle.loads(pickle.dumps(info.value))
    assert (type(e), str(e), e.channel, e.size, e.limit) == (
        shmring.MessageTooLarge, str(info.value), ch.name, 5000, 1008)


# ---------------------------------------------------------------- roles --


def test_role_taken_in_this_process(make_channel: Make) -> None:
    ch = make_channel("spsc")
    rx = ch.consumer()
    with pytest.raises(shmring.RoleTaken) as info:
        ch.consumer()
    e = info.value
    assert str(e) == (f"channel {ch.name!r} (spsc) allows one consumer; another endpoint of "
                      "this process holds it (close that consumer first)")
    assert (e.channel, e.pid) == (ch.name, os.getpid())
    rx.close()


def test_role_taken_says_which_pid_holds_it(make_channel: Make, uname: str) -> None:
    ch = make_channel("mpsc")
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a real other process holds the consumer
        try:
            theirs = shmring.Channel.open(uname, supervised=False)
            theirs.consumer()
            os.write(w, b"r")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(r, 1) == b"r"
        with pytest.raises(shmring.RoleTaken) as info:
            ch.consumer()
        assert f"allows one consumer; pid {pid} holds it" in str(info.value)
        assert info.value.pid == pid
    finally:
        os.write(go_w, b"g")
        os.waitpid(pid, 0)
        for fd in (r, w, go_r, go_w):
            os.close(fd)
    ch.recover_dead()


# ------------------------------------------------------ closed and ended --


def test_closed_endpoint_and_closed_channel_name_it(make_channel: Make) -> None:
    ch = make_channel()
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"last")
    ch.close_send()
    with pytest.raises(shmring.Closed) as info:
        tx.send(b"x")
    assert str(info.value) == f"channel {ch.name!r} was closed for sending (close_send)"
    assert info.value.channel == ch.name
    assert rx.recv() == b"last"
    with pytest.raises(shmring.EndOfStream) as eos:
        rx.recv()
    assert str(eos.value) == (f"end of stream: {_label(ch)} was closed for sending and every "
                              "message was received")
    rx.close()
    with pytest.raises(shmring.Closed) as closed:
        rx.recv()
    assert str(closed.value) == f"this endpoint of channel {ch.name!r} is closed"


# ---------------------------------------------------------------- queues --


def test_queue_full_and_empty_name_the_queue(make_queue: Callable[..., Any]) -> None:
    q = make_queue(shmring.Queue, 1)
    with pytest.raises(queue.Empty, match=r"is empty: nothing came within 0.05 s") as e1:
        q.get(timeout=0.05)
    assert repr(q._name) in str(e1.value)
    q.put(1)
    with pytest.raises(queue.Full, match=r"is full: no room within 0.05 s") as e2:
        q.put(2, timeout=0.05)
    assert repr(q._name) in str(e2.value)
    with pytest.raises(queue.Full, match=r"is full$"):
        q.put_nowait(3)


def test_joinable_queue_join_timeout_names_it(make_queue: Callable[..., Any]) -> None:
    q = make_queue(shmring.JoinableQueue)
    q.put(1)
    with pytest.raises(shmring.Timeout) as info:
        q.join(timeout=0.05)
    assert "timed out after 0.05 s waiting for the unfinished tasks of queue" in str(info.value)
    assert info.value.timeout == 0.05 and info.value.channel is not None
    q.get()
    q.task_done()
