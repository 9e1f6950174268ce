"""iceoryx2 Python bindings: publish-subscribe over a ``Slice[c_uint8]`` payload.

iceoryx2 has no blocking receive in publish-subscribe: a consumer either
polls ``Subscriber.receive()`` or waits on a separate event service. For
throughput and latency we busy-poll (yielding the CPU when empty), which is
iceoryx2's fastest mode; for the idle test the consumer blocks on a
``Listener`` of an event service, which is how an idle iceoryx2 consumer waits.

All of iceoryx2's files use a private prefix and root directory, removed by
:meth:`Iceoryx2.cleanup_all` (iceoryx2 keeps a global management segment in
/dev/shm after its last node is gone).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from .base import Peer, Receiver, Sender, Topology, unique_name

_PREFIX = f"shmbench{os.getpid()}_"
_ROOT = f"/tmp/shmbench-iox2-{os.getpid()}/"
_POLL_NOTE = "consumer busy-polls receive(), sched_yield() when empty"


class _Node:
    """A node and one publish-subscribe service, opened in a child process."""

    def __init__(self, service: str, topo: Topology) -> None:
        import iceoryx2 as iox

        iox.set_log_level(iox.LogLevel.Fatal)
        self.iox = iox
        config = iox.config.default()
        config.global_cfg.prefix = iox.FileName.new(_PREFIX)
        config.global_cfg.root_path = iox.Path.new(_ROOT)
        self.node = (
            iox.NodeBuilder.new()
            .config(config)
            .signal_handling_mode(iox.SignalHandlingMode.Disabled)
            .create(iox.ServiceType.Ipc)
        )
        self.name = service
        self.service = self._retry(
            lambda: (
                self.node.service_builder(iox.ServiceName.new(service))
                .publish_subscribe(iox.Slice[ctypes.c_uint8])
                .enable_safe_overflow(False)  # lossless: publishers wait for slow subscribers
                .subscriber_max_buffer_size(topo.depth)
                .max_publishers(topo.producers)
                .max_subscribers(topo.consumers)
                .open_or_create()
            )
        )

    def drop_node(self) -> None:
        """Release the service and node now: child processes exit without finalizers."""
        self.service = None
        self.node = None

    @staticmethod
    def _retry(make: Any, timeout: float = 5.0) -> Any:
        """open_or_create can fail while another process is creating the service."""
        end = time.monotonic() + timeout
        while True:
            try:
                return make()
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.01)


class _Sender(Sender, _Node):
    def __init__(self, service: str, topo: Topology) -> None:
        _Node.__init__(self, service, topo)
        iox = self.iox
        self.pub = (
            self.service.publisher_builder()
            .initial_max_slice_len(topo.msg_size)
            .backpressure_strategy(iox.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        self._wait_for_subscribers(topo.consumers)
        loan, memmove = self.pub.loan_slice_uninit, ctypes.memmove

        def send(data: bytes) -> None:
            sample = loan(len(data))
            memmove(sample.payload_ptr, data, len(data))
            sample.assume_init().send()

        self.send = send

    def _wait_for_subscribers(self, count: int, timeout: float = 10.0) -> None:
        """Connect to every subscriber before sending: a sample sent to none is dropped."""
        end = time.monotonic() + timeout
        while self.service.dynamic_config.number_of_subscribers < count:
            if time.monotonic() > end:
                raise TimeoutError("iceoryx2: the subscribers never appeared")
            time.sleep(0.001)
        self.pub.update_connections()

    def close(self) -> None:
        self.pub.delete()
        self.drop_node()


class _Receiver(Receiver, _Node):
    def __init__(self, service: str, topo: Topology) -> None:
        _Node.__init__(self, service, topo)
        self.sub = self.service.subscriber_builder().buffer_size(topo.depth).create()
        receive, string_at, yield_ = self.sub.receive, ctypes.string_at, os.sched_yield

        def poll() -> Any:
            while True:
                sample = receive()
                if sample is not None:
                    return sample
                yield_()

        def recv() -> bytes:
            sample = poll()
            data = string_at(sample.payload_ptr, sample.header.number_of_elements)
            sample.delete()
            return data

        @contextlib.contextmanager
        def recv_view() -> Iterator[memoryview]:
            sample = poll()
            try:
                yield sample.payload().as_memory_view().cast("B")  # ctypes says '<B'
            finally:
                sample.delete()

        self.recv = recv
        self.recv_view = recv_view
        self._listener: Any = None

    def prepare_idle(self) -> None:
        iox = self.iox
        event = self.node.service_builder(iox.ServiceName.new(self.name + "/idle")).event()
        self._listener = self._retry(lambda: event.open_or_create()).listener_builder().create()

    def wait_idle(self, seconds: float) -> None:
        self._listener.timed_wait(self.iox.Duration.from_secs_f64(seconds))

    def close(self) -> None:
        if self._listener is not None:
            self._listener.delete()
        self.sub.delete()
        self.drop_node()


class Iceoryx2(Peer):
    """Zero-copy shared-memory publish-subscribe (Rust core, Python bindings)."""

    name = "iceoryx2"
    label = "iceoryx2"
    unsupported: ClassVar[dict[str, str]] = {
        "small_batch": "the Python binding has no batch send/receive",
        "workqueue": "publish-subscribe gives every sample to every subscriber: no work queue",
    }
    notes: ClassVar[dict[str, str]] = {
        "small": _POLL_NOTE,
        "large": _POLL_NOTE,
        "large_view": "receive() + payload().as_memory_view()",
        "pingpong": _POLL_NOTE,
        "fanout": _POLL_NOTE,
        "fanin": "4 publishers, 1 subscriber",
        "idle": "Listener.timed_wait() on an event service",
    }

    def check(self) -> str | None:
        # Not imported here: importing iceoryx2 starts a thread in the harness process,
        # which slows the blocking wake-ups of every other system measured after it.
        if importlib.util.find_spec("iceoryx2") is None:
            return "not installed"
        return None

    def version(self) -> str:
        from importlib.metadata import version

        return version("iceoryx2")

    def setup(self, topo: Topology) -> Any:
        return unique_name("shmbench").replace("-", "/")  # the children create the service

    def sender(self, ctx: Any, topo: Topology, index: int) -> Sender:
        return _Sender(ctx, topo)

    def receiver(self, ctx: Any, topo: Topology, index: int) -> Receiver:
        return _Receiver(ctx, topo)

    def cleanup_all(self) -> None:
        for path in glob.glob(f"/dev/shm/{_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        shutil.rmtree(_ROOT, ignore_errors=True)
