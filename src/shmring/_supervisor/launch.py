"""Which interpreter runs an auto-started supervisor.

A client starts ``<python> -m shmring supervisor ... --daemonize``. The
obvious ``sys.executable`` is not always a Python: an application that embeds
Python (a game engine, uWSGI) or a frozen one (PyInstaller) has its own
binary there, and running *that* with ``-m shmring`` would start the
application again, or nothing that ever listens. So:

1. ``$SHMRING_PYTHON``, if set, is used as it is (the user said so);
2. else ``sys.executable``, if its name is a Python's (``python``,
   ``python3.11``, ``pypy3``...) and the application is not frozen;
3. else ``sys._base_executable`` (a venv's base), ``python<major>.<minor>``
   and ``python3`` found on ``PATH``, the first that can import this very
   shmring (checked by running it once);
4. else :class:`SupervisorUnavailable` at once, saying what to set.

Of many clients that find no supervisor, only the holder of the spawn lock
(:func:`try_spawn_lock`) starts one.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys

from .._errors import SupervisorUnavailable

_PYTHON_NAME = re.compile(r"^(python|pypy)[0-9.]*[a-z]*$")


def looks_like_python(path: str | None) -> bool:
    """True if ``path`` is named like a Python interpreter (whether this user
    may run it is for the attempt to say: that error is the useful one)."""
    return bool(path) and _PYTHON_NAME.match(os.path.basename(path or "")) is not None


def _imports_shmring(python: str, env: dict[str, str]) -> bool:
    try:
        r = subprocess.run([python, "-c", "import shmring._core"], env=env, timeout=30,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def interpreter(env: dict[str, str]) -> str:
    """The Python to run the supervisor with (``env`` is the one it will
    get, ``PYTHONPATH`` included). Raises :class:`SupervisorUnavailable`."""
    chosen = os.environ.get("SHMRING_PYTHON")
    if chosen:
        return chosen
    frozen = getattr(sys, "frozen", False)
    if not frozen and looks_like_python(sys.executable):
        return sys.executable
    # Others only if they can import this shmring: a venv's base Python, say,
    # lacks the venv's packages.
    candidates: list[str | None] = [] if frozen else [getattr(sys, "_base_executable", None)]
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        candidates.append(shutil.which(name, path=env.get("PATH")))
    for path in candidates:
        if path and path != sys.executable and looks_like_python(path) \
                and _imports_shmring(path, env):
            return path
    raise SupervisorUnavailable(
        f"cannot start a supervisor: this process's executable {sys.executable!r} is not a "
        "Python interpreter (an embedded or frozen application) and no Python on PATH can "
        "import shmring; set SHMRING_PYTHON to one that can, run `shmring supervisor` "
        "yourself, or set SHMRING_SUPERVISOR=0 to run without one")


def try_spawn_lock(path: str) -> int:
    """The right to start a supervisor, or -1 if another process has it.

    A POSIX record lock, not ``flock``: it belongs to this process, so a
    child forked meanwhile (by another thread) does not inherit it, and it
    goes when we close the file or die. (A flock belongs to the open file,
    which the child shares: it would keep the lock for its whole life.)"""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return -1
    return fd
