"""Helpers of the logsink tests: the daemon and the example app as real
processes, a scripted app (this file run as a program) that logs on command
and says exactly which of its records were dropped, and a reader of the
sink's (rotated) files.

The scripted app reads commands on stdin, one a line, and answers each with
one JSON line:

- ``log N TAG [SECONDS]``: log N records ``"TAG i"`` (SECONDS apart); answers ``{"dropped": [i...],
  "max_emit": s, "slow": emits that took 0.8 x timeout or more, "sent":
  total, "total_dropped": total}`` (an index is dropped when
  ``handler.dropped`` grew during its ``emit``);
- ``close``: close the handler (reports what is unreported), answer, exit.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from namespace_util import segments

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "logsink"
DAEMON = EXAMPLE / "logsinkd.py"
APP = EXAMPLE / "app.py"
UNIT = EXAMPLE / "shmring-logsink.service"
#: The line format the tests give the sink, easy to parse.
FORMAT = "%(process)d|%(name)s|%(levelname)s|%(message)s"
_count = itertools.count()


def namespace() -> str:
    """A namespace unique to this test, carrying this process's pid (so the
    leak check of conftest.py sees its segments)."""
    return f"ls-{os.getpid()}-{next(_count)}"


def env_for(ns: str) -> dict[str, str]:
    """The environment of a process of namespace ``ns`` (its supervisor
    leaves one second after its last client)."""
    return dict(os.environ, SHMRING_NAMESPACE=ns, SHMRING_SUPERVISOR_IDLE="1",
                PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")


def status(ns: str, channel: str = "logsink") -> dict[str, Any]:
    """``logsinkd.py status --json``, parsed."""
    done = subprocess.run([sys.executable, str(DAEMON), "status", "--json",
                           "--channel", channel], env=env_for(ns), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode in (0, 3), done.stderr
    st: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) == st["running"]
    return st


def quick_status(ns: str, channel: str = "logsink") -> dict[str, Any]:
    """``shmring.logging.sink_status`` from this process (cheaper to poll
    than the command)."""
    import shmring.logging as shlog
    return shlog.sink_status(channel, namespace=ns)


def start_sink(ns: str, log: Path, *args: str, channel: str = "logsink"
               ) -> subprocess.Popen[str]:
    """Start ``logsinkd.py run`` writing to ``log``; returns once it runs."""
    p = subprocess.Popen([sys.executable, str(DAEMON), "run", "--channel", channel,
                          "--file", str(log), "--format", FORMAT, *args],
                         env=env_for(ns), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 30
    while not (st := quick_status(ns, channel))["running"] or st["pid"] != p.pid:
        assert p.poll() is None, f"the sink exited: {p.stderr.read() if p.stderr else ''}"
        assert time.monotonic() < deadline, "the sink did not start"
        time.sleep(0.05)
    return p


def stop(p: subprocess.Popen[str]) -> None:
    """SIGTERM ``p`` and reap it (SIGKILL after 20 s)."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for f in (p.stdin, p.stdout, p.stderr):
        if f is not None:
            f.close()


def cleanup(ns: str, channel: str = "logsink") -> None:
    """Remove the (persistent) channel and wait for the namespace to empty."""
    subprocess.run([sys.executable, str(DAEMON), "unlink", "--channel", channel],
                   env=env_for(ns), capture_output=True, timeout=30)
    deadline = time.monotonic() + 15
    while segments(ns) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not segments(ns), f"left in /dev/shm: {segments(ns)}"


class App:
    """The scripted app (this module run as a program), in namespace ``ns``."""

    def __init__(self, ns: str, channel: str = "logsink", timeout: float = 0.05) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, channel, str(timeout)],
                                     env=env_for(ns), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def cmd(self, line: str) -> dict[str, Any]:
        """Send one command, return its answer."""
        self.send(line)
        return self.answer()

    def send(self, line: str) -> None:
        """Send one command (read its answer with :meth:`answer`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        """The answer to the last command sent."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the app exited ({self.proc.wait()})"
        out: dict[str, Any] = json.loads(line)
        return out

    def log(self, n: int, tag: str) -> dict[str, Any]:
        """Log ``n`` records ``"tag i"``."""
        return self.cmd(f"log {n} {tag}")

    def close(self) -> dict[str, Any]:
        """Close the handler and let the app exit."""
        out = self.cmd("close")
        assert self.proc.wait(30) == 0
        self.reap()
        return out

    def reap(self) -> None:
        """Kill (if still running) and reap the process."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def lines(log: Path) -> list[tuple[int, str, str, str]]:
    """(pid, logger, level, message) of every line of ``log`` and its
    rotated backups, oldest first. Continuation lines (tracebacks) are
    skipped."""
    files = sorted(log.parent.glob(log.name + ".*"),
                   key=lambda f: -int(f.suffix[1:]) if f.suffix[1:].isdigit() else 0)
    out = []
    for f in [*files, log]:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            parts = line.split("|", 3)
            if len(parts) == 4 and parts[0].isdigit():
                out.append((int(parts[0]), parts[1], parts[2], parts[3]))
    return out


def records(log: Path, tag: str) -> Counter[tuple[int, int]]:
    """How many times each (pid, i) of records ``"tag i"`` was written."""
    c: Counter[tuple[int, int]] = Counter()
    for pid, _name, _level, msg in lines(log):
        head, _, i = msg.partition(" ")
        if head == tag and i.isdigit():
            c[(pid, int(i))] += 1
    return c


def drops_reported(log: Path) -> dict[int, int]:
    """pid -> drops the sink reported for it."""
    out: dict[int, int] = {}
    for _pid, name, _level, msg in lines(log):
        if name == "shmring.logsink" and " records dropped by pid " in msg:
            n, _, pid = msg.partition(" records dropped by pid ")
            out[int(pid)] = out.get(int(pid), 0) + int(n)
    return out


def wait_for(pred: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``pred()`` until true (bounded)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _serve(channel: str, timeout: float, stdin: IO[str], stdout: IO[str]) -> None:
    import shmring.logging as shlog
    handler = shlog.Handler(channel, timeout=timeout)
    log = logging.getLogger("scripted")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.propagate = False
    for line in stdin:
        words = line.split()
        if words[0] == "log":
            dropped, worst, slow = [], 0.0, 0
            pause = float(words[3]) if len(words) > 3 else 0.0
            for i in range(int(words[1])):
                if pause:
                    time.sleep(pause)
                before = handler.dropped
                t = time.monotonic()
                log.info("%s %d", words[2], i)
                took = time.monotonic() - t
                worst = max(worst, took)
                slow += took >= 0.8 * timeout
                if handler.dropped != before:
                    dropped.append(i)
            answer: dict[str, Any] = {"dropped": dropped, "max_emit": worst, "slow": slow}
        else:
            handler.close()
            answer = {}
        answer.update(sent=handler.sent, total_dropped=handler.dropped)
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()
        if words[0] == "close":
            return


if __name__ == "__main__":
    _serve(sys.argv[1], float(sys.argv[2]), sys.stdin, sys.stdout)


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace of its own; its channel removed and its segments gone at the end."""
    name = namespace()
    yield name
    cleanup(name)
