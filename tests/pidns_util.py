"""Processes in PID namespaces of their own, for the liveness tests.

An :class:`Agent` is a Python process running this file's command loop
(:func:`serve`): one command a line on its stdin, one answer a line on its
stdout. ``Agent(container=True)`` starts it in a new PID namespace with a
/proc of its own (``unshare -p --fork --mount-proc``, as root), as a
container sharing the host's /dev/shm and /tmp does: it calls itself pid 1,
and its pids mean nothing on the host. ``Agent(container=False)`` is the same
loop on the host, so both sides of a test are driven alike.

Commands (answers ``ok ...``, or ``error <exception type> <message>``):

- ``create NAME PATTERN`` / ``open NAME``: the channel (one at a time);
- ``take producer|consumer``: an endpoint (``ok``; ``error RoleTaken`` if
  another holds the exclusive role);
- ``send HEX`` / ``recv``: one message (``ok HEX``);
- ``release``: close the endpoint; ``close``: close the channel too;
- ``supervise``: start a supervisor of the namespace in this PID namespace
  (``python -m shmring supervisor``) and wait until it holds its guard;
- ``count REGION N``: add N to counter ``c`` and set gauge ``g`` to 1 in
  metrics region REGION (this process's slab); ``fold REGION``: fold the
  slabs of dead processes there (``ok <how many>``);
- ``whoami``: ``ok <pid> <PID namespace inode>``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from typing import IO

import shmring
import shmring.metrics as m
from shmring._proc import pid_namespace

HERE = os.path.abspath(__file__)
UNSHARE = ["unshare", "-p", "--fork", "--mount-proc"]
#: Exclusive roles: (pattern, producer?) pairs of every role one endpoint holds alone.
EXCLUSIVE = [("spsc", True), ("spsc", False), ("mpsc", False), ("broadcast", True)]


class AgentError(Exception):
    """An agent answered ``error``; ``kind`` is the exception's type name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class Agent:
    """One agent process (see the module docstring); ``env`` is added to
    this process's environment."""

    def __init__(self, *, container: bool, env: dict[str, str] | None = None) -> None:
        self.container = container
        argv = [*(UNSHARE if container else []), sys.executable, HERE]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, **(env or {})}, start_new_session=True)
        self.pid, self.pidns = (int(x) for x in self.ask("whoami").split())

    def ask(self, command: str, timeout: float = 30.0) -> str:
        """Send ``command``; its answer (after ``ok``), or AgentError."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = _readline(self.proc.stdout, timeout)
        if line is None:
            self.kill()
            raise AssertionError(f"agent gave no answer to {command!r} within {timeout} s")
        word, _, rest = line.rstrip("\n").partition(" ")
        if word == "ok":
            return rest
        if word == "error":
            kind, _, message = rest.partition(" ")
            raise AgentError(kind, message)
        raise AssertionError(f"agent answered {line!r} to {command!r}")

    def take(self, producer: bool) -> bool:
        """Ask for an endpoint: True if granted, False if RoleTaken."""
        try:
            self.ask("take " + ("producer" if producer else "consumer"))
            return True
        except AgentError as e:
            if e.kind != "RoleTaken":
                raise
            return False

    @property
    def host_pid(self) -> int:
        """The agent's pid in our namespace (in a container: the child of
        ``unshare``)."""
        if not self.container:
            return self.proc.pid
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return int(f.read().split()[0])

    def kill(self) -> None:
        """SIGKILL the agent (a container's whole namespace goes with it) and
        reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError, IndexError,
                                     ValueError):
                os.kill(self.host_pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def close(self) -> None:
        """Let the agent close everything and exit (EOF on its stdin)."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self.kill()


def _readline(f: IO[str], timeout: float) -> str | None:
    r, _, _ = select.select([f], [], [], timeout)
    if not r:
        return None
    line = f.readline()
    return line or None


def wait_until(cond: object, timeout: float, what: str) -> None:
    """Poll the callable ``cond`` until true; AssertionError after ``timeout`` s."""
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


# ------------------------------------------------------------ the agent --
class _State:
    def __init__(self) -> None:
        self.ch: shmring.Channel | None = None
        self.ep: shmring.Producer | shmring.Consumer | None = None
        self.sup: subprocess.Popen[bytes] | None = None
        self.metrics: dict[str, tuple[m.Registry, m.Counter, m.Gauge]] = {}


def _run(st: _State, cmd: str, arg: str) -> str:
    if cmd == "whoami":
        return f"{os.getpid()} {pid_namespace()}"
    if cmd == "create":
        name, pattern = arg.split()
        st.ch = shmring.Channel.create(name, capacity=1 << 12, pattern=pattern)
        return ""
    if cmd == "open":
        st.ch = shmring.Channel.open(arg, wait=10)
        return ""
    if cmd == "take":
        assert st.ch is not None and st.ep is None
        st.ep = st.ch.producer() if arg == "producer" else st.ch.consumer()
        return ""
    if cmd == "send":
        assert isinstance(st.ep, shmring.Producer)
        st.ep.send(bytes.fromhex(arg), timeout=10)
        return ""
    if cmd == "recv":
        assert isinstance(st.ep, shmring.Consumer)
        return st.ep.recv(timeout=10).hex()
    if cmd == "counts":
        assert st.ch is not None
        return f"{st.ch.producers} {st.ch.consumers}"
    if cmd == "release":
        if st.ep is not None:
            st.ep.close()
            st.ep = None
        return ""
    if cmd == "close":
        _run(st, "release", "")
        if st.ch is not None:
            st.ch.close()
            st.ch = None
        return ""
    if cmd == "supervise":
        from shmring._supervisor import instance

        ns = os.environ["SHMRING_NAMESPACE"]
        st.sup = subprocess.Popen([sys.executable, "-m", "shmring", "supervisor",
                                   "--startup-grace", "0"], stdout=subprocess.DEVNULL)
        wait_until(lambda: instance.holder(ns) is not None, 20, "the supervisor's guard")
        return str(st.sup.pid)
    if cmd in ("count", "fold"):
        name, _, n = arg.partition(" ")
        if name not in st.metrics:
            reg = m.Registry(name)
            st.metrics[name] = (reg, m.Counter("c", "c", registry=reg),
                                m.Gauge("g", "g", registry=reg))
        reg, c, g = st.metrics[name]
        if cmd == "fold":
            return str(reg.fold())
        c.inc(int(n))
        g.set(1.0)
        return ""
    raise ValueError(f"unknown command {cmd!r}")


def serve() -> None:
    """The agent's command loop, until EOF on stdin."""
    st = _State()
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            out = "ok " + _run(st, cmd, arg)
        except Exception as e:  # every failure is an answer
            out = f"error {type(e).__name__} {str(e).splitlines()[0] if str(e) else ''}"
        sys.stdout.write(out.rstrip() + "\n")
        sys.stdout.flush()
    _run(st, "close", "")
    for reg, _c, _g in st.metrics.values():
        reg.close()
    if st.sup is not None:
        st.sup.terminate()
        st.sup.wait(30)


if __name__ == "__main__":
    serve()
