"""Helpers for the supervisor tests: a private socket directory and
namespace per test, forked children, waiting without sleeping blindly."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from shmring._supervisor import client as _client
from shmring._supervisor import instance
from shmring._supervisor.server import Supervisor

_counter = itertools.count()
_children: list[Child] = []


class FakeClock:
    """An injectable supervisor clock that only moves when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Env:
    """Where a test's supervisor lives."""

    namespace: str
    socket_dir: str

    @property
    def lock(self) -> str:
        return os.path.join(self.socket_dir, f"{self.namespace}.lock")

    @property
    def sock(self) -> str:
        return os.path.join(self.socket_dir, f"{self.namespace}.sock")

    def shm(self, name: str) -> str:
        return f"/dev/shm/shmring.{self.namespace}.{name}"

    def connection(self) -> _client.Connection:
        return _client.connection(self.namespace, self.socket_dir)

    def supervisor_pid(self) -> int | None:
        """Pid of the running supervisor (from its lock file), if one runs."""
        if not lock_held(self.lock):
            return None
        with open(self.lock) as f:
            text = f.read().strip()
        return int(text) if text else None

    def wait_no_supervisor(self, timeout: float = 10.0) -> None:
        wait_for(lambda: not lock_held(self.lock), timeout, "the supervisor to exit")


def lock_held(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def supervisor_env(monkeypatch: pytest.MonkeyPatch, idle: float = 0.3) -> Iterator[Env]:
    """A fresh namespace and socket directory for this test, exported to the
    environment so that clients (and children) find them. On exit: this
    process's connections are dropped and the test waits until no supervisor
    of the namespace runs."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    ns = f"t{worker}{os.getpid()}x{next(_counter)}"
    d = tempfile.mkdtemp(prefix="shmr-")  # short: socket paths are limited to 108 bytes
    monkeypatch.setenv("SHMRING_SOCKET_DIR", d)
    monkeypatch.setenv("SHMRING_NAMESPACE", ns)
    monkeypatch.setenv("SHMRING_SUPERVISOR_IDLE", str(idle))
    monkeypatch.delenv("SHMRING_SUPERVISOR", raising=False)
    env = Env(ns, d)
    try:
        yield env
    finally:
        while _children:  # a failed test's children must not outlive it
            _children.pop().kill()
        conn = _client._conns.pop((d, ns), None)
        if conn is not None:
            conn.disconnect()
        try:
            env.wait_no_supervisor()
        finally:
            shutil.rmtree(d, ignore_errors=True)
            # A SIGKILLed supervisor leaves its instance guard in /dev/shm.
            instance.remove_stale(ns)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """This test's own namespace and socket directory (``supervisor_env``)."""
    with supervisor_env(monkeypatch) as e:
        yield e


@pytest.fixture
def clock() -> FakeClock:
    """The injectable clock a test moves instead of waiting."""
    return FakeClock()


@contextlib.contextmanager
def clocked_supervisor(env: Env, clock: FakeClock, **options: float) -> Iterator[Supervisor]:
    """A supervisor on ``clock``, with no startup grace, and ``options``
    (``claim_timeout=``, ``lease_timeout=``): its periodic checks run when a
    test calls them after moving the clock."""
    s = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0, clock=clock,
                   **options).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def sup(env: Env) -> Iterator[Supervisor]:
    """An in-process supervisor for the test's namespace."""
    s = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0).start()
    yield s
    s.stop()


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "a condition") -> None:
    """Poll ``cond`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


class Child:
    """A forked child running ``fn``; ``ready()`` waits for its first
    ``signal()``; ``kill()`` sends SIGKILL and reaps it."""

    def __init__(self, fn: Callable[[Child], object]) -> None:
        self._r, self._w = os.pipe()
        self._go_r, self._go_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                os.close(self._r)
                os.close(self._go_w)
                fn(self)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(self._w)
        os.close(self._go_r)
        self.status: int | None = None
        _children.append(self)

    def signal(self, data: bytes = b"r") -> None:
        """In the child: tell the parent something (one byte)."""
        os.write(self._w, data)

    def ready(self, timeout: float = 10.0) -> bytes:
        """In the parent: wait for the child's next signal."""
        import select

        r, _, _ = select.select([self._r], [], [], timeout)
        if not r:
            self.kill()
            pytest.fail("the child did not get ready")
        data = os.read(self._r, 1)
        if not data:
            self.wait()
            pytest.fail(f"the child exited early with status {self.status}")
        return data

    def go(self) -> None:
        """In the parent: let the child past its next ``wait_go()``."""
        os.write(self._go_w, b"g")

    def wait_go(self) -> None:
        """In the child: wait for the parent's ``go()``."""
        if not os.read(self._go_r, 1):
            raise RuntimeError("the parent went away")

    def kill(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait()

    def poll(self) -> int | None:
        """The exit status if the child has exited (reaping it), else None."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                os.close(self._r)
                os.close(self._go_w)
        return self.status

    def wait(self, timeout: float = 30.0) -> int:
        if self.status is None:
            deadline = time.monotonic() + timeout
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.status = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    pytest.fail("the child hung")
                time.sleep(0.002)
            os.close(self._r)
            os.close(self._go_w)
        return self.status


def sleep_forever() -> None:
    while True:
        time.sleep(100)
