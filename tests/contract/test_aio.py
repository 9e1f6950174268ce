"""asyncio: recv_async / send_async / async iteration, cancellation that
loses nothing, and an idle await that costs no CPU."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

import shmring
from shmring._channel import aio as _aio


@pytest.fixture(params=["spsc", "mpmc", "broadcast"])
def ch(make_channel: Callable[..., shmring.Channel],
       request: pytest.FixtureRequest) -> shmring.Channel:
    return make_channel(request.param, 1 << 16)


def later(delay: float, fn: object, *args: object) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        fn(*args)  # type: ignore[operator]

    t = threading.Thread(target=run)
    t.start()
    return t


def test_recv_async_waits_for_a_message(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()

    async def main() -> bytes:
        t = later(0.05, tx.send, b"hello")
        msg = await rx.recv_async(timeout=10)
        t.join()
        return msg

    assert asyncio.run(main()) == b"hello"


def test_recv_async_timeout_and_ready_message(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()

    async def main() -> None:
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout):
            await rx.recv_async(timeout=0.1)
        assert time.monotonic() - t0 >= 0.09
        tx.send(b"ready")
        assert await rx.recv_async(timeout=0) == b"ready"  # no wait needed

    asyncio.run(main())


def test_cancelled_receive_loses_nothing(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()

    async def main() -> list[bytes]:
        got: list[bytes] = []
        for i in range(50):
            task = asyncio.create_task(rx.recv_async())
            await asyncio.sleep(0)  # let it start waiting
            if i % 2:
                tx.send(b"%d" % i)  # the message may be ready as we cancel
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                got.append(await task)
        while True:
            try:
                got.append(rx.recv_nowait())
            except shmring.WouldBlock:
                return got

    got = asyncio.run(main())
    assert got == [b"%d" % i for i in range(1, 50, 2)]


def test_cancel_under_a_stream_loses_nothing(make_channel: Callable[..., shmring.Channel]) -> None:
    # A producer thread streams while the receiving task is repeatedly
    # cancelled by timeouts: every message arrives exactly once, in order.
    ch = make_channel(capacity=1 << 12, pattern="spsc")
    tx, rx = ch.producer(), ch.consumer()
    n = 3000

    def produce() -> None:
        for i in range(n):
            tx.send(b"%d" % i, timeout=10)

    async def main() -> list[int]:
        got: list[int] = []
        t = threading.Thread(target=produce)
        t.start()
        while len(got) < n:
            try:
                msg = await asyncio.wait_for(rx.recv_async(), timeout=0.0005)
            except asyncio.TimeoutError:
                continue
            got.append(int(msg))
        t.join()
        return got

    assert asyncio.run(main()) == list(range(n))


def test_idle_await_uses_no_cpu(ch: shmring.Channel) -> None:
    rx = ch.consumer()

    async def main() -> float:
        c0, w0 = time.process_time(), time.monotonic()
        with pytest.raises(shmring.Timeout):
            await rx.recv_async(timeout=1.0)
        return (time.process_time() - c0) / (time.monotonic() - w0)

    share = asyncio.run(main())
    assert share < 0.10, f"an idle await used {share:.0%} of a core"


def test_one_helper_thread_per_endpoint(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()

    async def main() -> None:
        for i in range(200):
            later(0, tx.send, b"%d" % i).join() if i % 50 == 0 else tx.send(b"%d" % i)
            assert await rx.recv_async(timeout=5) == b"%d" % i
        # Wait on an empty channel a few times: still one helper.
        for _ in range(3):
            with pytest.raises(shmring.Timeout):
                await rx.recv_async(timeout=0.01)

    before = threading.active_count()
    asyncio.run(main())
    helpers = [t for t in threading.enumerate() if t.name == "shmring-aio-waiter"]
    assert len(helpers) == 1
    assert threading.active_count() <= before + 1
    rx.close()
    assert not helpers[0].is_alive()  # close() stops and joins it


@pytest.mark.parametrize("pattern", ["spsc", "mpmc"])
def test_async_iteration_until_end_of_stream(make_channel: Callable[..., shmring.Channel],
                                             pattern: str) -> None:
    ch = make_channel(capacity=1 << 16, pattern=pattern)
    tx, rx = ch.producer(), ch.consumer()

    async def main() -> list[bytes]:
        def produce() -> None:
            for i in range(100):
                tx.send(b"m%d" % i)
            ch.close_send()

        t = later(0.02, produce)
        out = [m async for m in rx]
        t.join()
        return out

    assert asyncio.run(main()) == [b"m%d" % i for i in range(100)]


def test_send_async_waits_for_space(make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=1 << 12, pattern="spsc")
    tx, rx = ch.producer(), ch.consumer()

    async def main() -> None:
        n = 0
        while True:
            try:
                tx.send_nowait(b"x" * 200)
                n += 1
            except shmring.WouldBlock:
                break
        task = asyncio.create_task(tx.send_async(b"l" * 200, timeout=10))
        await asyncio.sleep(0.05)
        assert not task.done()
        later(0.01, rx.recv).join()
        await task
        with pytest.raises(shmring.Timeout):
            await tx.send_async(b"y" * 1000, timeout=0.05)
        got = [rx.recv() for _ in range(n)]
        assert got[-1] == b"l" * 200

    asyncio.run(main())


def test_send_async_sees_close_send(make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=1 << 12, pattern="mpsc")
    tx = ch.producer()
    ch.consumer()

    async def main() -> None:
        while True:
            try:
                tx.send_nowait(b"x" * 200)
            except shmring.WouldBlock:
                break
        task = asyncio.create_task(tx.send_async(b"m" * 200))
        await asyncio.sleep(0.02)
        ch.close_send()
        with pytest.raises(shmring.Closed):
            await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_objects_async(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()

    async def main() -> None:
        arr = np.arange(1000)
        await tx.send_obj_async({"a": arr, "k": "v"})
        got = await rx.recv_obj_async(timeout=5)
        assert np.array_equal(got["a"], arr) and got["k"] == "v"
        later(0.02, tx.send_obj, (1, 2))
        assert await rx.recv_obj_async(timeout=5) == (1, 2)
        await tx.send_obj_async(np.ones(1500))
        with await rx.recv_obj_async(copy=False) as view:
            assert view.sum() == 1500 and not view.flags.writeable

    asyncio.run(main())


def test_many_tasks_share_one_consumer(make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=1 << 14, pattern="mpmc")
    tx, rx = ch.producer(), ch.consumer()

    async def worker(out: list[bytes]) -> None:
        try:
            while True:
                out.append(await rx.recv_async(timeout=0.5))
        except shmring.Timeout:
            pass

    async def main() -> list[bytes]:
        out: list[bytes] = []
        tasks = [asyncio.create_task(worker(out)) for _ in range(4)]
        await asyncio.sleep(0.01)
        for i in range(500):
            await tx.send_async(b"%d" % i)
            if i % 100 == 0:
                await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
        return out

    out = asyncio.run(main())
    assert sorted(out, key=int) == [b"%d" % i for i in range(500)]


def test_close_while_awaiting(ch: shmring.Channel) -> None:
    rx = ch.consumer()

    async def main() -> None:
        task = asyncio.create_task(rx.recv_async())
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        rx.close()  # joins the helper: at most one wait slice
        assert time.monotonic() - t0 < _aio.SLICE + 0.5
        with pytest.raises(shmring.Closed):
            await asyncio.wait_for(task, 5)
        with pytest.raises(shmring.Closed):
            await rx.recv_async()

    asyncio.run(main())


def _child_sends_later(name: str) -> None:
    ch = shmring.Channel.open(name)
    tx = ch.producer()
    time.sleep(0.2)
    for i in range(100):
        tx.send_obj({"i": i})
    ch.close_send()
    ch.close()


def test_messages_from_another_process(make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=1 << 14, pattern="mpsc")
    rx = ch.consumer()
    p = mp.get_context("fork").Process(target=_child_sends_later, args=(ch.name,))
    p.start()

    async def main() -> list[int]:
        out = []
        while True:
            try:
                out.append((await rx.recv_obj_async(timeout=30))["i"])
            except shmring.EndOfStream:
                return out

    try:
        assert asyncio.run(main()) == list(range(100))
    finally:
        p.join(30)
    assert p.exitcode == 0
