"""A host's holder process and the process scan the hosts harness
(``hosts_util``) tears down with. Kept apart from ``hosts_util`` so that the
holder, one per host, starts without importing pytest.

``python hosts_holder.py HOSTNAME`` (run by ``hosts_util`` inside a host's
new namespaces) sets the host's name (its own UTS namespace), says
``ready``, waits for EOF on its stdin (the test process closed it, or died),
SIGKILLs whatever still runs in its network namespace and exits; with it go
the host's namespaces, mounts and veth end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence


def netns_of(pid: int) -> str | None:
    """``pid``'s network namespace (``net:[inode]``), None if it is gone
    (or a zombie)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def pids_in(netns: str, exclude: Sequence[int] = ()) -> list[int]:
    """Every live process in network namespace ``netns`` (but ``exclude``)."""
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and int(e) not in exclude and netns_of(int(e)) == netns]


def kill_netns(netns: str, exclude: Sequence[int] = (), timeout: float = 10.0) -> None:
    """SIGKILL every process in ``netns`` (but ``exclude``), again until none
    is left (one may fork meanwhile); RuntimeError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while pids := pids_in(netns, exclude):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in {netns} survive SIGKILL")
        time.sleep(0.01)


def hold(hostname: str) -> None:
    """The holder's life (see the module docstring)."""
    socket.sethostname(hostname)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    with contextlib.suppress(OSError):
        while os.read(0, 1 << 12):
            pass
    netns = netns_of(os.getpid())
    if netns is not None:
        kill_netns(netns, exclude=(os.getpid(),))


if __name__ == "__main__":
    hold(sys.argv[1])
