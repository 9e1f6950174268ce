"""Helpers of the jobd tests: jobd, its workers and clients as real
processes in a namespace of the test's own, asked for their status through
the service itself, and all stopped (and their segments checked gone) at the
end."""

from __future__ import annotations

import itertools
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from shmring._rpc import Requester

JOBD = Path(__file__).resolve().parents[1] / "examples" / "jobd"
_count = itertools.count()


def read_line(stream: IO[str], timeout: float) -> str:
    """One line from a child's stdout, or AssertionError after ``timeout``."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        assert sel.select(timeout), f"nothing printed in {timeout} s"
    return stream.readline()


class Jobs:
    """jobd's processes of one test: started here, stopped at its end."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.env = dict(os.environ, SHMRING_NAMESPACE=namespace, SHMRING_SUPERVISOR_IDLE="1",
                        PYTHONUNBUFFERED="1")
        self.procs: list[subprocess.Popen[str]] = []
        self._client: Requester | None = None

    def start(self, script: str, *args: str, stdout: int | None = None) -> subprocess.Popen[str]:
        """Start ``examples/jobd/<script>`` with ``args``."""
        p = subprocess.Popen([sys.executable, str(JOBD / script), *args], env=self.env,
                             stdout=subprocess.PIPE if stdout is None else stdout,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def jobd(self, *args: str) -> subprocess.Popen[str]:
        """jobd ``run``, once it says it serves."""
        p = self.start("jobd.py", "run", *args)
        assert p.stdout is not None
        line = read_line(p.stdout, 30)
        assert line.startswith("jobd: serving 'jobd'"), line + (p.stderr.read() if p.stderr
                                                               else "")
        return p

    def worker(self, *args: str) -> subprocess.Popen[str]:
        """A worker (output thrown away)."""
        return self.start("worker.py", "--quiet", *args, stdout=subprocess.DEVNULL)

    def client(self) -> Requester:
        """A Requester of service jobd in this namespace (this process's)."""
        if self._client is None:
            self._client = Requester("jobd", namespace=self.namespace)
        return self._client

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """jobd's status, asked through the service."""
        st: dict[str, Any] = self.client().call({"op": "status"}, timeout=timeout)
        return st

    def wait_for(self, what: str, test: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Poll status until ``test(status)`` holds (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if test(st):
                return st
            assert time.monotonic() < deadline, f"no {what} after {timeout} s: {st}"
            time.sleep(0.05)

    def workers(self, n: int) -> dict[str, Any]:
        """Wait until jobd knows exactly ``n`` workers."""
        return self.wait_for(f"{n} workers", lambda st: len(st["workers"]) == n)

    def stop_all(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        # Workers first, so their bye still finds a jobd; then jobd.
        running = [p for p in self.procs if p.poll() is None]
        for group in ([p for p in running if "jobd.py" not in str(p.args)],
                      [p for p in running if "jobd.py" in str(p.args)]):
            for p in group:
                p.send_signal(signal.SIGTERM)
            for p in group:
                try:
                    p.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.communicate(timeout=10)
        for p in self.procs:
            for stream in (p.stdout, p.stderr):
                if stream is not None:
                    stream.close()


def segments(namespace: str) -> list[str]:
    """The /dev/shm entries of ``namespace``: its regions, and its
    supervisor's instance guard (there until that supervisor exits)."""
    guard = f"shmring-supervisor.{os.geteuid()}.{namespace}"
    return sorted(e for e in os.listdir("/dev/shm")
                  if e.startswith(f"shmring.{namespace}.") or e == guard)


def fresh_jobs() -> Iterator[Jobs]:
    """A :class:`Jobs` in a fresh namespace (the body of a test module's
    ``jobs`` fixture); at the end every process is stopped and every segment
    of the namespace must be gone within 10 s."""
    ns = f"jobd-{os.getpid()}-{next(_count)}"
    j = Jobs(ns)
    try:
        yield j
    finally:
        j.stop_all()
        assert_gone(ns)


def assert_gone(namespace: str, timeout: float = 10.0) -> None:
    """Wait (bounded) for ``namespace``'s segments and guard to go; remove
    and report whatever is left."""
    deadline = time.monotonic() + timeout
    while (left := segments(namespace)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for e in left:
        os.unlink("/dev/shm/" + e)
    assert not left, f"left in /dev/shm: {left}"


def client_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """What ``client.py --json`` printed."""
    out: dict[str, Any] = json.loads(done.stdout)
    return out
