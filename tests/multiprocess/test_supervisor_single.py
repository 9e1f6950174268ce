"""One supervisor per user and namespace, whatever each client's environment
says: clients whose socket directories differ (one with ``XDG_RUNTIME_DIR``,
one without; here two ``SHMRING_SOCKET_DIR``s) share the supervisor that
holds the namespace's guard in /dev/shm (``_supervisor/instance.py``).

Each client is a separate interpreter with its own environment; the
supervisors are real auto-started or hand-started processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
from supervisor_util import Env, lock_held, wait_for

from shmring._supervisor import instance

CLIENT = """
import os, sys
import shmring
name, create = sys.argv[1], sys.argv[2] == "create"
ch = (shmring.Channel.create(name, capacity=4096, pattern="mpmc") if create
      else shmring.Channel.open(name, wait=10))
print(ch._supervisor.supervisor_pid, flush=True)
sys.stdin.readline()
ch.close()
"""


@pytest.fixture
def other_dir() -> Iterator[str]:
    """A second private socket directory (another environment's)."""
    d = tempfile.mkdtemp(prefix="shmr-b-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _client(env: Env, directory: str, name: str, create: bool) -> subprocess.Popen[str]:
    e = dict(os.environ, SHMRING_SOCKET_DIR=directory, SHMRING_NAMESPACE=env.namespace)
    return subprocess.Popen([sys.executable, "-c", CLIENT, name, "create" if create else "open"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=e)


def _pid_of(p: subprocess.Popen[str]) -> int:
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip().isdigit(), f"the client said {line!r}"
    return int(line)


def _end(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
    for p in procs:
        p.wait(30)


def _cleanup(env: Env) -> None:
    wait_for(lambda: instance.holder(env.namespace) is None, 15, "the supervisor to exit")
    instance.remove_stale(env.namespace)
    assert not os.path.exists(instance.path(env.namespace))


def test_clients_of_two_directories_share_one_supervisor(env: Env, other_dir: str,
                                                         uname: str) -> None:
    a = _client(env, env.socket_dir, uname, create=True)
    b = None
    try:
        pid_a = _pid_of(a)
        h = instance.holder(env.namespace)
        assert h is not None and h.pid == pid_a and h.socket == env.sock
        b = _client(env, other_dir, uname, create=False)
        assert _pid_of(b) == pid_a  # not a supervisor of its own
        assert not lock_held(os.path.join(other_dir, f"{env.namespace}.lock"))
        assert not os.path.exists(os.path.join(other_dir, f"{env.namespace}.sock"))
    finally:
        _end(a, *([b] if b else []))
    assert a.returncode == 0 and (b is None or b.returncode == 0)
    _cleanup(env)


def test_a_second_supervisor_elsewhere_gives_way_or_waits(env: Env, other_dir: str,
                                                          uname: str) -> None:
    a = _client(env, env.socket_dir, uname, create=True)
    waiting = None
    cmd = [sys.executable, "-m", "shmring", "supervisor", "--namespace", env.namespace,
           "--socket-dir", other_dir]
    try:
        pid_a = _pid_of(a)
        # An auto-started one (--exit-when-idle) gives way at once, saying to whom.
        r = subprocess.run([*cmd, "--exit-when-idle", "1"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0
        assert f"pid {pid_a}" in r.stderr and env.sock in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        # One run by hand (systemd) waits, and takes over when the first exits.
        waiting = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        time.sleep(1.0)
        assert waiting.poll() is None
        assert not os.path.exists(os.path.join(other_dir, f"{env.namespace}.sock"))
        h = instance.holder(env.namespace)
        assert h is not None and h.pid == pid_a
    finally:
        _end(a)
    try:
        assert waiting is not None
        wait_for(lambda: (h := instance.holder(env.namespace)) is not None
                 and h.pid == waiting.pid, 20, "the waiting supervisor to take over")
    finally:
        if waiting is not None:
            waiting.terminate()
            waiting.wait(30)
    assert waiting.returncode == 0
    _cleanup(env)


def test_the_guard_goes_with_its_supervisor_and_a_killed_ones_is_taken_over(
        env: Env, other_dir: str, uname: str) -> None:
    a = _client(env, env.socket_dir, uname, create=True)
    b = None
    try:
        pid_a = _pid_of(a)
        os.kill(pid_a, 9)  # the supervisor, SIGKILLed: its guard file stays, unlocked
        wait_for(lambda: instance.holder(env.namespace) is None, 10, "the holder to be dead")
        assert os.path.exists(instance.path(env.namespace))
        # Client a reconnects (starting a supervisor in its directory) while
        # client b starts in the other: whichever took the guard serves both.
        b = _client(env, other_dir, uname, create=False)
        pid_b = _pid_of(b)
        assert pid_b != pid_a
        h = instance.holder(env.namespace)
        assert h is not None and h.pid == pid_b
        locks = [lock_held(os.path.join(d, f"{env.namespace}.lock"))
                 for d in (env.socket_dir, other_dir)]
        assert locks.count(True) == 1, locks
        assert h.socket == os.path.join((env.socket_dir, other_dir)[locks.index(True)],
                                        f"{env.namespace}.sock")
    finally:
        _end(a, *([b] if b else []))
    # A dead supervisor's guard is what `shmring gc --yes` removes (none here:
    # the live one holds it).
    gc = subprocess.run([sys.executable, "-m", "shmring", "gc", "-n", env.namespace, "--json"],
                        capture_output=True, text=True, timeout=60)
    assert '"stale_guards": []' in gc.stdout, gc.stdout
    # The last client gone, the supervisor exits when idle and removes its guard.
    wait_for(lambda: not os.path.exists(instance.path(env.namespace)), 15,
             "the guard file to be removed")
    _cleanup(env)


def test_a_planted_guard_is_not_trusted(env: Env, uname: str) -> None:
    path = instance.path(env.namespace)
    with open(path, "w") as f:
        f.write(f"{os.getpid()} 1 /tmp/planted.sock\n")
    os.chown(path, 65534, 65534)  # as if another user had put it there
    a = None
    try:
        assert instance.holder(env.namespace) is None
        a = _client(env, env.socket_dir, uname, create=True)
        pid_a = _pid_of(a)  # a supervisor runs all the same, without the guard
        os.kill(pid_a, 0)
        assert instance.holder(env.namespace) is None
    finally:
        if a is not None:
            _end(a)
        os.unlink(path)
    wait_for(lambda: not lock_held(env.lock), 15, "the supervisor to exit")


def test_gc_removes_a_dead_supervisors_guard(env: Env, uname: str) -> None:
    a = _client(env, env.socket_dir, uname, create=True)
    try:
        pid_a = _pid_of(a)
        a.kill()  # the client first, so nothing restarts the supervisor
        a.wait(30)
        os.kill(pid_a, 9)
        wait_for(lambda: env.supervisor_pid() is None, 10, "the supervisor to die")
        assert os.path.exists(instance.path(env.namespace))
        found = subprocess.run([sys.executable, "-m", "shmring", "gc", "-n", env.namespace],
                               capture_output=True, text=True, timeout=60)
        assert "instance guard of a dead supervisor" in found.stdout, found.stdout
        assert os.path.exists(instance.path(env.namespace))  # only listed
        gone = subprocess.run([sys.executable, "-m", "shmring", "gc", "-n", env.namespace,
                               "--yes", "--json"], capture_output=True, text=True, timeout=60)
        assert gone.returncode == 0
        assert f'"{env.namespace}"' in gone.stdout, gone.stdout
        assert not os.path.exists(instance.path(env.namespace))
    finally:
        if a.poll() is None:
            a.kill()
            a.wait(30)
        # the region the killed client made: the supervisor is dead too
        for e in os.listdir("/dev/shm"):
            if e == f"shmring.{env.namespace}.{uname}":
                os.unlink(f"/dev/shm/{e}")



def test_a_removed_socket_directory_is_made_again_for_new_clients(env: Env,
                                                                  uname: str) -> None:
    """A cleaner of /tmp removes the socket directory while the supervisor
    runs (it holds the namespace's guard, so no other may start): within a
    second or so it listens there again, and a new client is served by it."""
    a = _client(env, env.socket_dir, uname, create=True)
    b = None
    try:
        pid_a = _pid_of(a)
        shutil.rmtree(env.socket_dir)
        wait_for(lambda: os.path.exists(env.sock), 10, "the socket to be made again")
        assert oct(os.stat(env.socket_dir).st_mode & 0o777) == "0o700"
        b = _client(env, env.socket_dir, uname, create=False)
        assert _pid_of(b) == pid_a  # the same supervisor, reached anew
        assert lock_held(env.lock)  # and it holds the lock file again
    finally:
        _end(a, *([b] if b else []))
    assert a.returncode == 0 and (b is None or b.returncode == 0)
    _cleanup(env)


def test_a_socket_directory_that_cannot_be_made_again_is_tried_until_it_can(
        env: Env, uname: str) -> None:
    """A file where the directory was: the supervisor keeps serving the
    clients it has and tries again each second; once the file is gone it
    listens there again."""
    a = _client(env, env.socket_dir, uname, create=True)
    b = None
    try:
        pid_a = _pid_of(a)
        shutil.rmtree(env.socket_dir)
        with open(env.socket_dir, "w") as f:
            f.write("in the way\n")
        time.sleep(2.5)  # two looks fail
        assert os.path.isfile(env.socket_dir)
        os.kill(pid_a, 0)  # still there
        os.unlink(env.socket_dir)
        wait_for(lambda: os.path.exists(env.sock), 10, "the socket to be made again")
        b = _client(env, env.socket_dir, uname, create=False)
        assert _pid_of(b) == pid_a
    finally:
        if os.path.isfile(env.socket_dir):
            os.unlink(env.socket_dir)
        _end(a, *([b] if b else []))
    assert a.returncode == 0 and (b is None or b.returncode == 0)
    _cleanup(env)
