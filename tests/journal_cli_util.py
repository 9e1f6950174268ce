"""Helpers of the journal command tests: run ``shmring`` subcommands and
example programs as real processes in a namespace of the test's own, read
their stdout line by line with a deadline, and read a journal back; and the
test producer (a process sending ``msg(i)`` for i = 0, 1, ...) and the
recorder process that the multiprocess and stress tests share.
"""

from __future__ import annotations

import contextlib
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from namespace_util import TIMEOUT, program_env

from shmring._journal import Journal

ROOT = Path(__file__).resolve().parents[1]
NS = "SHMRING_NAMESPACE"
T = TypeVar("T")


@contextlib.contextmanager
def namespace_env() -> Iterator[dict[str, str]]:
    """The environment of one test's processes (``program_env``), with this
    venv's ``python`` and ``shmring`` first on PATH (the test's own channels
    pass ``namespace=env[NS]``)."""
    bindir = os.path.dirname(sys.executable)
    with program_env("jcli", PATH=bindir + os.pathsep + os.environ.get("PATH", "")) as env:
        yield env


class Proc:
    """A child process, its stdout read line by line with a deadline (by a
    thread, so that lines that arrive together are each seen at once)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.argv = argv
        self.lines: list[str] = []
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for got in self.proc.stdout:
            self._queue.put(got)
        self._queue.put("")  # end of its output

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.proc.pid

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next line of its stdout."""
        try:
            got = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.argv}: no output within {timeout:.0f} s") from None
        assert got, f"{self.argv} ended ({self.proc.wait(TIMEOUT)}): {self.err()}"
        self.lines.append(got.rstrip("\n"))
        return self.lines[-1]

    def lines_seen(self) -> str:
        """Every line read so far, joined."""
        return "\n".join(self.lines)

    def until(self, prefix: str, timeout: float = TIMEOUT) -> str:
        """Read lines until one starts with ``prefix``; that line."""
        deadline = time.monotonic() + timeout
        while not (got := self.line(max(deadline - time.monotonic(), 0.01))).startswith(prefix):
            pass
        return got

    def err(self) -> str:
        """Its stderr, once it has exited."""
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def finish(self, status: int = 0, timeout: float = TIMEOUT) -> tuple[str, str]:
        """Wait for it to exit with ``status``; (rest of stdout, stderr)."""
        self.proc.wait(timeout)
        self._reader.join(timeout)
        rest = []
        while (got := self._queue.get_nowait()) != "":
            rest.append(got)
        out = "".join(rest)
        err = self.err()
        assert self.proc.returncode == status, (self.argv, self.proc.returncode, out, err)
        return out, err

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        self.proc.kill()
        self.proc.wait(TIMEOUT)


@contextlib.contextmanager
def procs() -> Iterator[list[Proc]]:
    """A list to put processes in; whatever still runs at the end is killed."""
    made: list[Proc] = []
    try:
        yield made
    finally:
        for p in made:
            if p.proc.poll() is None:
                p.proc.kill()
            p.proc.wait(TIMEOUT)
            p._reader.join(TIMEOUT)
            for f in (p.proc.stdout, p.proc.stderr):
                if f is not None:
                    f.close()


def shmring_argv(*args: str) -> list[str]:
    """The command line of ``shmring ARGS`` run by this test's Python."""
    return [sys.executable, "-m", "shmring", *args]


def run_shmring(env: dict[str, str], *args: str,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``shmring ARGS`` to its end."""
    return subprocess.run(shmring_argv(*args), env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT * 2)


def journal_records(path: Path | str) -> list[tuple[int, bytes]]:
    """Every record of the journal in ``path``, in order, as (seq, bytes)."""
    with Journal.open(str(path)) as j, j.reader(timeout=0) as reader:
        return list(reader)


def journal_state(path: Path | str) -> tuple[int, int]:
    """(durable_seq, next_seq) of the journal in ``path``."""
    with Journal.open(str(path)) as j:
        return j.durable_seq, j.next_seq


PRODUCER = r"""
import os, struct, sys, time
import shmring
name, pattern, count, consumers, eos, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5] == "eos", sys.argv[6]
def msg(i):
    return struct.pack("<I", i) + bytes((i * 7 + k) % 256 for k in range(i % 300))
lossy = pattern == "broadcast-lossy"
ch = shmring.Channel.create(name, capacity=1 << 16, pattern=pattern.split("-")[0], lossy=lossy)
tx = ch.producer()
print("created", flush=True)
while ch.consumers < consumers:
    time.sleep(0.005)
i = 0
while count < 0 or i < count:
    tx.send(msg(i), timeout=60)
    i += 1
if eos:
    ch.close_send()
print("sent", i, flush=True)
deadline = time.monotonic() + 120
while hold != "-" and not os.path.exists(hold) and time.monotonic() < deadline:
    time.sleep(0.01)  # keeps the channel (and what is left in it) while consumers come and go
ch.close()
"""


def msg(i: int) -> bytes:
    """Message ``i`` of the producer."""
    return struct.pack("<I", i) + bytes((i * 7 + k) % 256 for k in range(i % 300))


def producer(env: dict[str, str], name: str, pattern: str, count: int, *,
             consumers: int = 1, eos: bool = True, hold: Path | None = None) -> Proc:
    """The producer as a process: creates ``name``, waits for ``consumers``,
    sends ``count`` messages (-1: until killed), marks the end of the stream
    (``eos``), and, given ``hold``, keeps the channel open until that file
    exists."""
    p = Proc([sys.executable, "-c", PRODUCER, name, pattern, str(count), str(consumers),
              "eos" if eos else "-", "-" if hold is None else str(hold)], env)
    assert p.line() == "created"
    return p


def recorder(env: dict[str, str], name: str, journal: Path, *extra: str) -> Proc:
    """``shmring record NAME JOURNAL`` as a process, once it says it records."""
    p = Proc(shmring_argv("record", name, str(journal), *extra), env)
    assert p.line().startswith(f"recording channel {name!r}")
    return p
