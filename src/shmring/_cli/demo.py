"""``shmring demo``: a producer process and a consumer process move a million
messages through a channel, and the demo says what it did and how fast.

It needs no setup and leaves nothing in /dev/shm: the channel is unlinked as
soon as both processes have it open (live mappings stay valid), so even a
crash of the demo cannot leave the segment behind.

Ctrl-C in a terminal signals the whole process group, so the producer is
started with SIGINT ignored: only the consumer (the command itself) sees it,
ends the producer at once (it may be blocked on a full ring) and exits 130.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import time
import zlib
from multiprocessing.process import BaseProcess

from .._channel.channel import Channel
from .._errors import EndOfStream

SIZE = 64


POOL = 1024  # distinct messages, reused round-robin so the loop does no formatting


def _message(i: int) -> bytes:
    return (i % POOL).to_bytes(8, "little") * (SIZE // 8)


def _producer(name: str, namespace: str, count: int, ready: mp.synchronize.Event,
              parent: int) -> None:
    _die_with(parent)
    ch = Channel.open(name, namespace=namespace)
    tx = ch.producer()
    ready.set()
    send = tx.send
    pool = [_message(i) for i in range(POOL)]
    for i in range(count):
        send(pool[i & (POOL - 1)])
    ch.close_send()
    ch.close()


def run(count: int = 1_000_000, capacity: int = 1 << 20) -> int:
    """Run the demo; returns a process exit status.

    Ctrl-C (``KeyboardInterrupt``) stops the producer at once, removes the
    segment and propagates, so that the command can exit 130.
    """
    name = f"demo-{os.getpid()}"
    namespace = "demo"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_producer, args=(name, namespace, count, ready, os.getpid()),
                       daemon=True)
    ch = Channel.create(name, capacity=capacity, pattern="spsc", namespace=namespace)
    previous = None  # the SIGINT handler, while a second Ctrl-C is ignored
    try:
        rx = ch.consumer()
        _start_ignoring_sigint(proc)
        print(f"channel {name!r}: spsc ring of {capacity >> 10} KiB in /dev/shm; producer "
              f"pid {proc.pid} sends {count:,} messages of {SIZE} bytes, one send() each; "
              f"consumer pid {os.getpid()} receives them", flush=True)
        if not ready.wait(30):
            print("producer did not start")
            _stop(proc)
            return 1
        ch.unlink()  # both sides have it mapped: nothing can leak from here on
        received, crc = 0, 0
        t0 = time.perf_counter()
        recv_many = rx.recv_many
        try:
            while True:
                batch = recv_many(4096, timeout=30)
                # One CRC over the whole stream, in arrival order, checks
                # content and order at once.
                crc = zlib.crc32(b"".join(batch), crc)
                received += len(batch)
        except EndOfStream:
            pass
        dt = time.perf_counter() - t0
        proc.join(30)
    except BaseException:
        # Ctrl-C or an error: do not wait for a producer that may be blocked,
        # and let no second Ctrl-C cut the clean-up short.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(proc)
        raise
    finally:
        ch.unlink()  # idempotent: already done once the producer was ready
        ch.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    expected = 0
    for i in range(count):
        expected = zlib.crc32(_message(i), expected)
    ok = received == count and crc == expected
    print(f"received {received:,} messages in {dt:.3f} s: {received / dt / 1e6:.2f} M msgs/s, "
          f"{received * SIZE / dt / 1e6:.0f} MB/s")
    verdict = "matches: every message, in order" if crc == expected else "DIFFERS"
    print(f"checksum over the stream {verdict}; producer exit code {proc.exitcode}")
    print("nothing left in /dev/shm" if not _leftover(name) else "segment left behind!")
    return 0 if ok and proc.exitcode == 0 else 1


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this producer when the demo's process dies.

    A consumer killed outright (SIGKILL, or the OOM killer) cannot stop the
    producer, which then waits on the full ring for ever: an spsc ring keeps
    its records for a consumer that may yet come. ``PR_SET_PDEATHSIG`` ends
    it with its parent instead; a parent gone before the call was made is
    seen as a changed ``getppid()``.
    """
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent:
        os._exit(1)


def _start_ignoring_sigint(proc: BaseProcess) -> None:
    """Start ``proc`` with SIGINT ignored, so that Ctrl-C in a terminal (sent to
    the whole foreground process group) reaches only this process, which then
    stops the producer: one quiet exit instead of a traceback from each.

    An ignored signal stays ignored across exec and Python keeps it so at
    start-up. A Ctrl-C during the few milliseconds of ``start()`` is lost.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc.start()
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(proc: BaseProcess) -> None:
    """End the producer now: SIGTERM, then SIGKILL if it lingers."""
    if proc.pid is None:
        return  # never started
    if proc.exitcode is None:
        proc.terminate()
        proc.join(5)
    if proc.exitcode is None:
        proc.kill()
        proc.join(5)


def _leftover(name: str) -> bool:
    return any(name in e for e in os.listdir("/dev/shm"))
