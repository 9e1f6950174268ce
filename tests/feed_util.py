"""Helpers of the feedd tests: run ``feedd.py`` and ``subscribe.py`` as
programs in a namespace of the test's own, read what a subscriber recorded,
and check it against the ticks replayed from seq 1.

``feed`` and ``feedd`` are the example's modules (examples/feedd on
sys.path), imported here so every test uses the same ones.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from namespace_util import TIMEOUT, program_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "feedd"
FEEDD = EXAMPLE / "feedd.py"
SUBSCRIBE = EXAMPLE / "subscribe.py"

sys.path.insert(0, str(EXAMPLE))
feed: ModuleType = importlib.import_module("feed")
feedd: ModuleType = importlib.import_module("feedd")
subscribe: ModuleType = importlib.import_module("subscribe")



@contextlib.contextmanager
def namespace_env() -> Iterator[dict[str, str]]:
    """The environment of one test's programs (``program_env``)."""
    with program_env("feed") as env:
        yield env


class Program:
    """A program of the example running as a child process, its stdout read
    line by line with a deadline."""

    def __init__(self, env: dict[str, str], script: Path | None, *args: str) -> None:
        # No script: args is the whole command line.
        self.argv = [*args] if script is None else [sys.executable, str(script), *args]
        self.proc = subprocess.Popen(self.argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.proc.pid

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next line of its stdout."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"{self.argv[1:]}: no output within {timeout:.0f} s"
        got = self.proc.stdout.readline()
        assert got, f"{self.argv[1:]} ended: {self.stderr()}"
        self.lines.append(got)
        return got.rstrip("\n")

    def stderr(self) -> str:
        """Its stderr, once it has exited."""
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        """Wait for it to exit; (status, the rest of its stdout)."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"{self.argv[1:]}: exit {self.proc.returncode}\n{err}"
        return self.proc.returncode, out

    def signal(self, sig: int) -> None:
        """Send it ``sig``."""
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        self.proc.kill()
        self.proc.wait(TIMEOUT)

    def stop(self) -> None:
        """SIGTERM it; it must exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        self.finish()


@contextlib.contextmanager
def programs() -> Iterator[list[Program]]:
    """A list to put programs in; whatever still runs at the end is killed."""
    made: list[Program] = []
    try:
        yield made
    finally:
        for p in made:
            if p.proc.poll() is None:
                p.proc.kill()
            p.proc.wait(TIMEOUT)
            for f in (p.proc.stdout, p.proc.stderr):
                if f is not None:
                    f.close()


def status(env: dict[str, str]) -> dict[str, Any]:
    """``feedd.py status --json``, parsed (its exit status as ``rc``)."""
    done = subprocess.run([sys.executable, str(FEEDD), "status", "--json"], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode in (0, 1), done.stderr
    st: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) == st["running"], (done.returncode, st)
    st["rc"] = done.returncode
    return st


def read_record(path: Path) -> tuple[dict[str, Any], list[tuple[int, str, float, int]]]:
    """What ``subscribe.py --record`` wrote: the snapshot line, the updates."""
    lines = path.read_text().splitlines()
    head: dict[str, Any] = json.loads(lines[0])
    updates = [(int(s), str(k), float(v), int(g)) for s, k, v, g in map(json.loads, lines[1:])]
    return head, updates


class Truth:
    """The feed as the publisher made it: every update replayed from seq 1
    with the same seed and keys."""

    def __init__(self, seed: int, keys: int, upto: int) -> None:
        ticks = feedd.Ticks(seed, keys)
        self.updates: list[tuple[str, float]] = [("", 0.0)]  # index = seq
        state: dict[str, Any] = {}
        for seq in range(1, upto + 1):
            key, value = ticks.next(seq, state)
            state[key] = value
            self.updates.append((key, value))

    def state_at(self, seq: int) -> dict[str, tuple[int, float]]:
        """Every key's (seq, value) after updates 1..``seq``."""
        out: dict[str, tuple[int, float]] = {}
        for n in range(1, seq + 1):
            key, value = self.updates[n]
            out[key] = (n, value)
        return out


def check_joined(truth: Truth, head: dict[str, Any],
                 updates: list[tuple[int, str, float, int]], last: int) -> int:
    """A lossless subscriber's record, checked exactly: its snapshot is the
    state at its seq S (values and each key's seq), then every update
    S+1..``last`` in order, each the publisher's, no gap; after each one its
    state is the publisher's at that seq. Returns S."""
    s = int(head["snapshot_seq"])
    want = truth.state_at(s)
    assert head["snapshot"] == {k: v for k, (_n, v) in want.items()}, s
    assert head["snapshot_seqs"] == {k: n for k, (n, _v) in want.items()}, s
    assert [u[0] for u in updates] == list(range(s + 1, last + 1)), (s, last, len(updates))
    state = dict(head["snapshot"])                        # the subscriber's view
    expected = {k: v for k, (_n, v) in want.items()}      # the publisher's
    for seq, key, value, gap in updates:
        assert gap == 0 and (key, value) == truth.updates[seq], seq
        state[key] = value
        t_key, t_value = truth.updates[seq]
        expected[t_key] = t_value
        assert state == expected, seq
    assert state == {k: v for k, (_n, v) in truth.state_at(last).items()}
    return s
