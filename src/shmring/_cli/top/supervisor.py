"""What a namespace's supervisor is doing, seen from outside it.

The supervisor answers a ``status`` request from any connection, before a
``hello`` (``_supervisor/server.py``): its pid, whether it is in its startup
grace, the regions it tracks with their holders, the processes it watches
(and whether each is connected), its counters. ``shmring top`` asks it that
on a connection of its own, opened and closed per frame, and never says
hello: it registers nothing, watches nothing, and cannot start a supervisor
(the clients' ``Connection`` would auto-start one; this must not).

It is found the way clients find it: the namespace's guard in /dev/shm
(``_supervisor/instance.py``) names the live supervisor and its socket,
wherever its environment put it; without a guard, the socket is where this
environment's would be. When nothing answers, what is observable is said
instead: the guard's holder, or who holds the namespace's lock file
(``/proc/locks`` names the pid of an ``flock`` by the file's inode; the lock
is never taken here, since even a probe would make a starting supervisor
think another one runs).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from ..._errors import ShmringError
from ..._supervisor import instance, wire

#: Seconds to wait for a status reply (a frame must not hang on a busy supervisor).
STATUS_TIMEOUT = 0.25


@dataclass
class Client:
    """A process the supervisor watches."""

    pid: int
    connected: bool
    holds: int  # regions it registered


@dataclass
class SupervisorState:
    """The supervisor of one namespace as seen now."""

    namespace: str
    running: bool = False
    pid: int | None = None
    answered: bool = False  # it replied to a status request
    in_grace: bool = False
    regions: int = 0
    processes: int = 0
    connections: int = 0
    clients: list[Client] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    socket: str = ""
    note: str = ""  # why it is not known better

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"running": self.running, "pid": self.pid, "answered": self.answered,
                "in_grace": self.in_grace, "regions": self.regions,
                "processes": self.processes, "connections": self.connections,
                "clients": [vars(c) for c in self.clients], "stats": self.stats,
                "socket": self.socket, "note": self.note}


def ask_status(path: str, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    """The supervisor's reply to ``status`` on socket ``path``. Raises
    OSError (no supervisor, timeout) or ValueError (a reply that is not one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        s.connect(path)
        wire.send(s, {"op": "status", "id": 1})
        reply, fds = wire.recv(s)
        for fd in fds:
            os.close(fd)
    if reply is None or not reply.get("ok"):
        raise ValueError(f"no status from the supervisor: {reply!r}")
    return reply


def lock_holder(path: str) -> int | None:
    """The pid holding an ``flock`` on file ``path`` (from /proc/locks), or None."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF" (a blocked waiter
        # has "->" after the number: it does not hold the lock).
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            pid = int(parts[4])
            major, minor, ino = parts[5].split(":")
        except ValueError:
            continue
        if int(ino) == st.st_ino and os.makedev(int(major, 16), int(minor, 16)) == st.st_dev:
            return pid
    return None


def observe(namespace: str) -> SupervisorState:
    """Ask (or, failing that, look at) the supervisor of ``namespace``."""
    state = SupervisorState(namespace)
    try:
        paths = wire.paths(namespace)
    except (ShmringError, OSError) as e:
        state.note = f"socket directory unusable: {e}"
        return state
    guard = instance.holder(namespace)
    state.socket = guard.socket if guard is not None else paths["sock"]
    try:
        st = ask_status(state.socket)
    except (OSError, ValueError) as e:
        holder = guard.pid if guard is not None else lock_holder(paths["lock"])
        if holder is not None:
            state.running, state.pid = True, holder
            state.note = f"holds the lock but did not answer ({_why(e)})"
        else:
            state.note = "not running (a client starts one on first use)" if isinstance(
                e, (FileNotFoundError, ConnectionRefusedError)) else f"no answer ({_why(e)})"
        return state
    state.running = state.answered = True
    state.pid = int(st.get("pid", 0)) or None
    state.in_grace = bool(st.get("in_grace"))
    counts = st.get("counts", {})
    state.regions = int(counts.get("regions", len(st.get("regions", []))))
    state.processes = int(counts.get("processes", len(st.get("processes", []))))
    state.connections = int(counts.get("connections", 0))
    state.stats = {str(k): int(v) for k, v in st.get("stats", {}).items()
                   if isinstance(v, (int, float))}
    state.clients = [Client(int(p["pid"]), bool(p.get("connected")), len(p.get("holds", [])))
                     for p in st.get("processes", [])]
    if st.get("truncated"):
        state.note = "status cut to fit one message"
    return state


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
