"""Ctrl-C ends a ``shmring`` command at once, quietly, with status 130, and
leaves no process and no segment behind.

Two ways a user sends it, both real: SIGINT to the command's process alone
(``kill -INT``), and Ctrl-C typed in a terminal, which the kernel turns into
SIGINT to the whole foreground process group (the demo's producer too). The
terminal is a pseudo-terminal from Python's ``pty`` module, made the
command's controlling terminal, so nothing needs installing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from supervisor_util import Env, supervisor_env, wait_for

#: Long enough that the demo is still moving messages when interrupted.
ENDLESS = str(10**12)

#: Started in a new session, this makes the terminal on its stdin the
#: controlling terminal (a session leader opening a tty acquires it), then
#: becomes the command, in the terminal's foreground process group.
_ON_TERMINAL = "import os, sys; os.close(os.open(os.ttyname(0), os.O_RDWR)); " \
               "os.execv(sys.executable, [sys.executable, '-m', 'shmring', *sys.argv[1:]])"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with supervisor_env(monkeypatch) as e:
        yield e


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for init to reap it has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return data[data.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def _demo_segments(pid: int) -> list[str]:
    return [e for e in os.listdir("/dev/shm") if f"demo-{pid}" in e]


class Terminal:
    """A command running on a pseudo-terminal: read what it prints, type keys."""

    def __init__(self, *argv: str) -> None:
        master, slave = os.openpty()
        self.master = master
        self.proc = subprocess.Popen([sys.executable, "-c", _ON_TERMINAL, *argv],
                                     stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.output = b""

    def read_until(self, text: bytes, timeout: float = 30.0) -> None:
        """Read until ``text`` appears; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                pytest.fail(f"no {text!r} on the terminal; it shows {self.output!r}")

    def _read(self, timeout: float) -> bool:
        if not select.select([self.master], [], [], timeout)[0]:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every process holding the terminal has gone
            return False
        self.output += chunk
        return bool(chunk)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float) -> int:
        """Wait for the command to exit (reading all it prints); its status."""
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):
            pass
        try:
            return self.proc.wait(max(0.1, deadline - time.monotonic()))
        finally:
            os.close(self.master)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _flowing(p: subprocess.Popen[str]) -> list[int]:
    """Once the demo ``p`` started its producer and unlinked the segment:
    its children (the producer among them)."""
    assert p.stdout is not None
    assert "producer pid" in p.stdout.readline()
    wait_for(lambda: not _running(p.pid) or (
        len(_children(p.pid)) >= 2 and not _demo_segments(p.pid)), 30,
        "the producer to start and the segment to be unlinked")
    return _children(p.pid)


def test_sigint_to_the_demo_parent_alone(env: Env) -> None:
    p = subprocess.Popen([sys.executable, "-m", "shmring", "demo", "--count", ENDLESS],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        children = _flowing(p)
        time.sleep(0.3)  # messages are flowing now
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 130, (out, err)
    assert took < 5, f"exit took {took:.1f} s"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err == ""
    wait_for(lambda: not any(_running(c) for c in children), 10, "the demo's children to end")
    assert _demo_segments(p.pid) == []


def test_ctrl_c_in_a_terminal_ends_the_demo_quietly(env: Env) -> None:
    term = Terminal("demo", "--count", ENDLESS)
    try:
        term.read_until(b"consumer pid")
        wait_for(lambda: term.proc.poll() is not None or len(_children(term.proc.pid)) >= 2,
                 30, "the producer to start")
        children = _children(term.proc.pid)
        time.sleep(0.5)  # both processes are in their loops
        t0 = time.monotonic()
        term.type(b"\x03")  # Ctrl-C: SIGINT to the parent and the producer alike
        status = term.finish(timeout=20)
        took = time.monotonic() - t0
    finally:
        term.kill()
    assert status == 130, term.output
    assert took < 5, f"exit took {took:.1f} s"
    assert b"Traceback" not in term.output and b"KeyboardInterrupt" not in term.output, \
        term.output.decode(errors="replace")
    wait_for(lambda: not any(_running(c) for c in children), 10, "the demo's children to end")
    assert _demo_segments(term.proc.pid) == []


def test_ctrl_c_in_a_terminal_ends_the_supervisor_quietly(env: Env) -> None:
    term = Terminal("supervisor", "-n", env.namespace, "--socket-dir", env.socket_dir)
    try:
        term.read_until(f"for namespace {env.namespace!r} on".encode())
        t0 = time.monotonic()
        term.type(b"\x03")
        status = term.finish(timeout=20)
        took = time.monotonic() - t0
    finally:
        term.kill()
    assert status == 130, term.output
    assert took < 5, f"exit took {took:.1f} s"
    assert b"Traceback" not in term.output, term.output.decode(errors="replace")
    assert b"stopped" in term.output
    env.wait_no_supervisor()


def test_sigkill_of_the_demo_parent_ends_its_producer(env: Env) -> None:
    """A consumer killed outright cannot stop its producer, which then waits
    on the full ring: the kernel ends it with its parent."""
    p = subprocess.Popen([sys.executable, "-m", "shmring", "demo", "--count", ENDLESS],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    children: list[int] = []
    try:
        children = _flowing(p)
        time.sleep(0.3)  # messages are flowing: the ring fills once the consumer is gone
        p.kill()
        p.wait(10)
        wait_for(lambda: not any(_running(c) for c in children), 10,
                 "the demo's children to end with it")
    finally:
        # A surviving producer holds our pipe open; once it is gone the
        # resource tracker removes the demo's semaphores and exits.
        for pid in [p.pid, *children[1:]]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        p.wait(10)
        assert p.stdout is not None
        p.stdout.close()
    assert _demo_segments(p.pid) == []
