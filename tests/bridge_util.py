"""Bridged channels in tests: two sides, each a supervisor namespace of its
own on this machine, each with its own ``shmring bridge`` process, joined
over TCP on loopback. (The tests that need two real hosts, with a /dev/shm
and a network of their own each, use ``hosts_util``.)

A :class:`Side` starts bridges and Python programs with its namespace in
their environment; :func:`two_sides` stops them all at the end and removes
what the bridges left (imported rings are persistent: they outlive their
bridge on purpose).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

from namespace_util import segments, wait_for

import shmring

_runs = itertools.count()

#: A line a bridge prints once it is up.
READY = "shmring bridge: namespace"


#: Side b's producer: create ``name`` (spsc unless argv[3] says), wait for
#: its consumer (the exporting bridge), send N records numbered 0..N-1 as
#: 8 bytes little-endian (padded to argv[4] bytes) at up to argv[5] records
#: a second (0: as fast as it can), then end the stream.
SOURCE = """
import shmring, sys, time
name, n = sys.argv[1], int(sys.argv[2])
pattern = sys.argv[3] if len(sys.argv) > 3 else "spsc"
size = int(sys.argv[4]) if len(sys.argv) > 4 else 8
rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
ch = shmring.Channel.create(name, 1 << 16, pattern, lease=None)
tx = ch.producer()
while ch.consumers == 0:
    time.sleep(0.01)
print("consumer", flush=True)
pad = bytes(max(0, size - 8))
t0 = time.monotonic()
for i in range(n):
    if rate and i % 100 == 0:
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    tx.send(i.to_bytes(8, "little") + pad, timeout=300)
ch.close_send()
print("sent", n, flush=True)
while ch.consumers:  # the bridge still reads: keep the channel until it is done
    time.sleep(0.05)
"""

#: Side a's reader: open ``name`` (waiting for the bridge to make it),
#: receive until end of stream, print the numbers and how often the ring
#: said Broken (a link down past its timeout: it waits and reads on) as JSON.
SINK = """
import json, shmring, sys, time
name = sys.argv[1]
rx = shmring.Channel.open(name, wait=60).consumer()
print("joined", flush=True)
got, broken = [], 0
while True:
    try:
        got.extend(int.from_bytes(m[:8], "little") for m in rx.recv_many(512, timeout=300))
    except shmring.EndOfStream:
        break
    except shmring.Broken:
        broken += 1
        time.sleep(0.05)
print(json.dumps({"got": got, "broken": broken}), flush=True)
"""


def check_exact(got: list[int], n: int) -> None:
    """``got`` is 0..n-1 exactly, in order; else say where it is not."""
    if got == list(range(n)):
        return
    dup = len(got) - len(set(got))
    missing = sorted(set(range(n)) - set(got))
    first = next((i for i, (x, y) in enumerate(zip(got, range(n), strict=False)) if x != y),
                 min(len(got), n))
    raise AssertionError(f"{len(got)} records for {n}: {dup} duplicated, {len(missing)} "
                         f"missing (first {missing[:5]}), first out of place at {first}")


def free_port() -> int:
    """A TCP port nobody listens on now (on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class BridgeProc:
    """A running ``shmring bridge`` and the lines it printed."""

    def __init__(self, proc: subprocess.Popen[str], lines: list[str]) -> None:
        self.proc, self.lines = proc, lines

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM it; its exit status."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("the bridge did not stop on SIGTERM") from None


class Side:
    """One side: a namespace, its environment, its bridges and programs."""

    def __init__(self, ns: str, env: dict[str, str]) -> None:
        self.ns, self.env = ns, env
        self.procs: list[subprocess.Popen[Any]] = []

    def bridge(self, *args: str, timeout: float = 30.0) -> BridgeProc:
        """Start ``shmring bridge ARGS`` here; returns once it is up."""
        p = subprocess.Popen([sys.executable, "-m", "shmring", "bridge", *args],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        self.procs.append(p)
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        assert p.stdout is not None
        while True:
            line = p.stdout.readline()
            if not line:
                p.wait(10)
                raise AssertionError(f"bridge exited with {p.returncode}: {''.join(lines)}")
            lines.append(line)
            if line.startswith(READY):
                break
            assert time.monotonic() < deadline, f"bridge not up: {''.join(lines)}"
        return BridgeProc(p, lines)

    def status(self) -> dict[str, Any]:
        """The running bridge's status (``shmring bridge --status``)."""
        r = subprocess.run([sys.executable, "-m", "shmring", "bridge", "--status"],
                           env=self.env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        st: dict[str, Any] = json.loads(r.stdout)
        return st

    def python(self, code: str, *args: str) -> subprocess.Popen[str]:
        """Run ``code`` (dedented) in a Python here, stdout piped."""
        p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        self.procs.append(p)
        return p

    def streaming(self, name: str, direction: str = "outbound") -> bool:
        """Whether the bridge here has a stream of channel ``name``."""
        try:
            st = self.status()
        except AssertionError:
            return False
        return any(s["channel"] == name for s in st[direction])

    def wait_streaming(self, name: str, direction: str = "outbound") -> None:
        """Wait until the bridge here streams channel ``name``."""
        wait_for(f"{direction} stream of {name!r} in {self.ns}",
                 lambda: self.streaming(name, direction))

    def close(self) -> None:
        """Stop every process started here (bridges with SIGTERM first)."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()


class KillablePair:
    """Bridge ``b`` exports channel ``name`` on a free loopback port and
    bridge ``a`` imports it (up and streaming once made); either can be
    SIGKILLed and started again with the same arguments (:meth:`restart`).
    ``imported`` is the imported channel, opened on side ``a`` once both
    bridges stream it (the caller closes it)."""

    def __init__(self, a: Side, b: Side, name: str) -> None:
        url = f"tcp://127.0.0.1:{free_port()}"
        self._how = {"exporter": (b, ("--listen", url, "--export", name)),
                     "importer": (a, ("--connect", url, "--import", name))}
        self.procs = {role: side.bridge(*args) for role, (side, args) in self._how.items()}
        a.wait_streaming(name, "inbound")
        self.imported = shmring.Channel.open(name, namespace=a.ns)
        b.wait_streaming(name)

    def restart(self, role: str) -> None:
        """SIGKILL the ``exporter`` or the ``importer`` and start it again."""
        self.procs[role].kill()
        side, args = self._how[role]
        self.procs[role] = side.bridge(*args)


def rest(p: subprocess.Popen[str]) -> str:
    """The rest of what ``p`` prints, once it exits (read through its text
    stream: ``communicate`` would skip what an earlier ``readline``
    buffered). The test's own timeout bounds the wait."""
    assert p.stdout is not None
    out = p.stdout.read()
    p.wait(60)
    return out


def output(p: subprocess.Popen[str]) -> str:
    """What ``p`` printed from here on, once it exited 0 (its stderr in the
    failure)."""
    out = rest(p)
    err = p.stderr.read() if p.stderr is not None else ""
    assert p.returncode == 0, f"exit {p.returncode}: {err}"
    return out


@contextlib.contextmanager
def two_sides(prefix: str = "br") -> Iterator[tuple[Side, Side]]:
    """Two sides, ``a`` and ``b``, each its own namespace and supervisor."""
    n = next(_runs)
    sides = []
    for tag in ("a", "b"):
        ns = f"{prefix}{tag}-{os.getpid()}-{n}"
        env = dict(os.environ, SHMRING_NAMESPACE=ns, SHMRING_SUPERVISOR_IDLE="1",
                   PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        sides.append(Side(ns, env))
    try:
        yield sides[0], sides[1]
    finally:
        for s in sides:
            s.close()
        for s in sides:  # imported rings are persistent: remove what is left
            for e in segments(s.ns):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join("/dev/shm", e))
