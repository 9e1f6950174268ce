"""One supervisor per user and namespace, whatever the environment says.

The socket directory depends on the environment (``$SHMRING_SOCKET_DIR``,
``$XDG_RUNTIME_DIR``, ``/tmp``, which a service may see privately), so a lock
in it only keeps out supervisors that chose the same directory: a client with
``XDG_RUNTIME_DIR`` set and one without it used to start one each, and both
recovered slots of the same regions. The regions live in ``/dev/shm``, which
every process that maps them sees; the guard lives there too:
``/dev/shm/shmring-supervisor.<uid>.<namespace>`` (not a region: ``shmring
ls`` and ``gc`` look at ``shmring.*`` only).

- The running supervisor holds an ``flock`` on it and writes one line into
  it: its pid, its start time, its PID namespace and its socket's path (a
  client in another PID namespace cannot judge that pid: it presumes the
  holder alive and lets the connection tell). It unlinks it when it
  stops (still holding the lock; whoever locks a file meanwhile checks that
  the path still names the inode it locked, and tries again if not). A
  SIGKILLed supervisor leaves the file unlocked: the next one takes it over;
  :func:`remove_stale` removes it otherwise.
- A client reads it first: if its holder lives, the client connects to the
  holder's socket (after checking that the socket's directory is its own
  user's and private), wherever its own environment would have looked.
- The file is created 0600 and opened with ``O_NOFOLLOW``; one that belongs
  to another user (someone planted it in the world-writable ``/dev/shm``) is
  never trusted: the supervisor runs without this guard and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
from dataclasses import dataclass

from .._proc import holder_alive, my_start_time, pid_namespace

log = logging.getLogger("shmring.supervisor")

PREFIX = "shmring-supervisor."
#: Where the regions are (``_region.names.SHM_DIR``; clients may not import
#: ``_region``, see tests/unit/test_imports.py).
SHM_DIR = "/dev/shm"


def path(namespace: str) -> str:
    """The guard file of ``namespace`` for this user."""
    return f"{SHM_DIR}/{PREFIX}{os.geteuid()}.{namespace}"


@dataclass(frozen=True)
class Holder:
    """The supervisor that holds a namespace's guard, as its file says."""

    pid: int
    start: int
    socket: str
    pidns: int = 0  # its PID namespace (0: not said)


def _parse(text: str) -> Holder | None:
    parts = text.strip().split(" ", 3)
    if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    if len(parts) == 4 and parts[2].isdigit():  # pid start pidns socket
        return Holder(int(parts[0]), int(parts[1]), parts[3], int(parts[2]))
    return Holder(int(parts[0]), int(parts[1]), " ".join(parts[2:]))


def _ours(fd: int) -> bool:
    st = os.fstat(fd)
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def holder(namespace: str) -> Holder | None:
    """The live supervisor that holds ``namespace``'s guard, or None (no
    file, a dead holder's, one not ours, or a socket not in a private
    directory of ours)."""
    try:
        fd = os.open(path(namespace), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _ours(fd):
            return None
        h = _parse(os.read(fd, 4096).decode(errors="replace"))
    finally:
        os.close(fd)
    if h is None or holder_alive(h.pid, h.start, h.pidns or pid_namespace()) is False:
        return None
    try:
        st = os.lstat(os.path.dirname(h.socket))
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    return h


class Guard:
    """The guard of one namespace, held by the running supervisor."""

    def __init__(self, namespace: str, socket_path: str) -> None:
        self.namespace = namespace
        self.socket = socket_path
        self.path = path(namespace)
        self._fd = -1

    @property
    def held(self) -> bool:
        """True while this process holds it."""
        return self._fd >= 0

    def try_acquire(self) -> Holder | None:
        """Take the guard: None once held (or when it cannot be used: a file
        planted by another user, logged), else the supervisor holding it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600)
            except OSError as e:
                log.warning("cannot use the instance guard %s (%s): running without it",
                            self.path, e.strerror or e)
                return None
            if not _ours(fd):
                os.close(fd)
                log.warning("the instance guard %s is not ours (planted by another user?): "
                            "running without it", self.path)
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 4096).decode(errors="replace")
                os.close(fd)
                return _parse(text) or Holder(0, 0, "?")
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # unlinked by a supervisor that stopped meanwhile: again
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {my_start_time()} {pid_namespace()} "
                             f"{self.socket}\n".encode())
            except OSError as e:  # a full /dev/shm: held all the same, clients use their path
                log.warning("cannot write the instance guard %s (%s): clients of other socket "
                            "directories will not find this supervisor", self.path,
                            e.strerror or e)
            self._fd = fd
            return None

    def release(self) -> None:
        """Remove the guard (still locked, so nobody takes the old inode) and
        let it go."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1

    def after_fork(self) -> None:
        """In a forked child: drop the descriptor (the flock is the open
        file's; the parent keeps it)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _stale(namespace: str, *, remove: bool) -> bool:
    """True if ``namespace``'s guard file is ours and nobody holds it;
    ``remove`` unlinks it then (locked, so no supervisor takes that inode)."""
    p = path(namespace)
    try:
        fd = os.open(p, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not _ours(fd):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            if os.stat(p, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                return False
        except FileNotFoundError:
            return False
        if remove:
            os.unlink(p)
        return True
    finally:
        os.close(fd)


def remove_stale(namespace: str) -> bool:
    """Remove ``namespace``'s guard if no supervisor holds it (one SIGKILLed
    leaves it behind). True if removed."""
    return _stale(namespace, remove=True)


def stale_namespaces(namespace: str | None = None) -> list[str]:
    """Namespaces (all, or just ``namespace``) whose guard file of this user
    is in /dev/shm with no supervisor holding it."""
    mine = f"{PREFIX}{os.geteuid()}."
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return []
    found = sorted(e[len(mine):] for e in names if e.startswith(mine))
    return [ns for ns in found if (namespace is None or ns == namespace)
            and _stale(ns, remove=False)]
