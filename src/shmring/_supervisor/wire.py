"""The supervisor's socket: where it lives, who may open it, and the messages
on it. Shared by the supervisor (``server.py``) and its clients
(``client.py``).

Where: one directory per user, ``$SHMRING_SOCKET_DIR`` if set (tests), else
``$XDG_RUNTIME_DIR/shmring`` (systemd's per-user tmpfs), else
``/tmp/shmring-<uid>``; mode 0700 and owned by us, checked on every use, so
another user can neither connect nor plant a socket or lock file of their own
(a directory squatted by someone else is refused, never used). In it, per
namespace: ``<ns>.sock`` (the socket), ``<ns>.lock`` (``flock``-ed by the one
running supervisor, never unlinked: unlinking a lock file lets two processes
lock two different inodes), ``<ns>.spawn`` (serialises auto-starts) and
``<ns>.log`` (an auto-started supervisor's log).

What: ``SOCK_SEQPACKET``, so the kernel keeps message boundaries, reports the
peer's exit as EOF and carries file descriptors (a client's pidfd) with a
message. Each message is one JSON object, at most :data:`MAX_MESSAGE` bytes.
Requests carry an ``op`` and an ``id`` the reply repeats; see the table in
docs/design.md, section "Supervisor".
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
from typing import Any

from .._errors import PermissionDenied

PROTOCOL = 1
MAX_MESSAGE = 1 << 16
#: Items per ``hello`` message when a client re-registers many regions.
HELLO_CHUNK = 200


def socket_dir() -> str:
    """The per-user directory of supervisor sockets, created 0700 if missing."""
    d = os.environ.get("SHMRING_SOCKET_DIR")
    if not d:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if xdg and os.path.isdir(xdg):
            d = os.path.join(xdg, "shmring")
        else:
            d = f"/tmp/shmring-{os.geteuid()}"
    return ensure_private_dir(d)


def ensure_private_dir(d: str) -> str:
    """Create ``d`` with mode 0700, or check that the existing one is a real
    directory owned by us that nobody else can open."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(d, 0o700)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionDenied(f"{d!r} is not a directory: refusing to use it for sockets")
    if st.st_uid != os.geteuid():
        raise PermissionDenied(
            f"{d!r} belongs to uid {st.st_uid}, not to us ({os.geteuid()}): refusing to "
            "use it (remove it, or set SHMRING_SOCKET_DIR)"
        )
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)
    return d


def paths(namespace: str, directory: str | None = None) -> dict[str, str]:
    """The socket, lock, spawn-lock and log paths of ``namespace``."""
    d = socket_dir() if directory is None else ensure_private_dir(directory)
    return {k: os.path.join(d, f"{namespace}.{k}") for k in ("sock", "lock", "spawn", "log")}


def send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one message (and optionally file descriptors with it)."""
    data = json.dumps(msg, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """Receive one message and the descriptors that came with it; ``None`` at
    EOF. Raises ValueError for a message that is not a JSON object."""
    data, fds, flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ValueError("truncated message")
    msg = json.loads(data)
    if not isinstance(msg, dict):
        for fd in fds:
            os.close(fd)
        raise ValueError("a message must be a JSON object")
    return msg, fds


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, from the kernel
    (``SO_PEERCRED``); the pid is as seen from our PID namespace, 0 if the
    peer is not visible in it."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def pidfd_pid(pidfd: int) -> int | None:
    """The pid (in our PID namespace) of the process a pidfd refers to: 0 if it
    is not visible from here, -1 if it has exited, None if unknown."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None
