"""The supervisor's listening socket, kept reachable at its path.

Clients find a supervisor by the path of its socket (``wire.paths``; the
instance guard in /dev/shm names it too). A cleaner of /tmp
(systemd-tmpfiles, tmpreaper) or a user may remove that path, or the whole
directory, while the supervisor runs. The supervisor still holds the
namespace's guard, so a new one gives way to it, and every new client
would fail to connect for as long as it runs: a namespace that cannot be
used, and a supervisor that never goes idle because the processes already
attached keep it busy. So the supervisor looks at the path every
:data:`CHECK_EVERY` seconds and, when it no longer names its socket, makes
the directory again (0700, ``wire.ensure_private_dir``) and listens there
anew, and takes its lock file again (:func:`relock`). Connections already
open are not affected.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket

from .wire import ensure_private_dir

#: Seconds between two looks at the socket's path.
CHECK_EVERY = 1.0


class Listener:
    """A listening ``SOCK_SEQPACKET`` socket bound at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self._id = (0, 0)  # (st_dev, st_ino) of the socket file we bound
        self.failures = 0  # reopen() attempts failed in a row

    def open(self) -> socket.socket:
        """Bind and listen at the path (whatever is there is removed: the
        caller holds the namespace's lock)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            s.bind(self.path)
            os.chmod(self.path, 0o600)
            s.listen(4096)
            s.setblocking(False)
            st = os.stat(self.path)
        except BaseException:
            s.close()
            raise
        self._id = (st.st_dev, st.st_ino)
        self.sock = s
        return s

    def reachable(self) -> bool:
        """Whether the path still names our socket."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._id

    def reopen(self) -> socket.socket:
        """Listen at the path again (its directory made again if it is
        gone); the old socket is closed once the new one listens. OSError
        (and the old socket kept) if that cannot be done now."""
        old = self.sock
        try:
            ensure_private_dir(os.path.dirname(self.path))
            new = self.open()
        except OSError:
            self.failures += 1
            raise
        self.failures = 0
        if old is not None:
            old.close()
        return new

    def close(self) -> None:
        """Stop listening and remove the path if it is still ours."""
        if self.sock is None:
            return
        if self.reachable():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.sock.close()
        self.sock = None


def relock(path: str, fd: int) -> int:
    """The lock file at ``path`` removed with its directory: make it again,
    hold it and return its fd (closing ``fd``, the lock of the removed one);
    ``fd`` if the file is there or cannot be held. Meanwhile the instance
    guard in /dev/shm kept other supervisors of the namespace away."""
    if os.path.exists(path):
        return fd
    new = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(new)
        return fd
    os.write(new, f"{os.getpid()}\n".encode())
    if fd >= 0:
        os.close(fd)
    return new
