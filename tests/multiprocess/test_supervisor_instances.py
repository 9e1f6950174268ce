"""The supervisor, one per user and namespace: a single instance (and a
daemon taking over from an auto-started one), who may talk to it, namespaces
and a full tmpfs.

Real processes, real sockets, real /dev/shm; each test has its own namespace
and socket directory (the ``env`` fixture of supervisor_util).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import posix_ipc
import pytest
from supervisor_util import Env, FakeClock, wait_for
from user_util import as_nobody

import shmring
from shmring._proc import my_start_time
from shmring._region import inventory as _gc
from shmring._supervisor import client as _client
from shmring._supervisor import wire as _ipc
from shmring._supervisor.server import AlreadyRunning, Supervisor


def gone(env: Env, name: str) -> bool:
    return not os.path.exists(env.shm(name))


# -------------------------------------------------------- single instance --
def test_many_clients_start_exactly_one_supervisor(env: Env, uname: str) -> None:
    n = 12
    script = (
        "import os, sys, time, shmring\n"
        "from shmring._supervisor import client as _client\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "ch = shmring.Channel.create(sys.argv[1], capacity=4096)\n"
        "print(_client.connection(os.environ['SHMRING_NAMESPACE']).supervisor_pid, flush=True)\n"
        "sys.stdin.read()\n"
        "ch.close()\n"
    )
    start_at = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", script, f"{uname}-{i}", str(start_at)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in range(n)]
    try:
        pids = {p.stdout.readline().strip() for p in procs if p.stdout}
    finally:
        for p in procs:
            p.communicate("", timeout=30)
    assert len(pids) == 1 and pids != {""}
    assert all(p.returncode == 0 for p in procs)
    with open(os.path.join(env.socket_dir, f"{env.namespace}.log")) as f:
        started = [line for line in f if " on /" in line]
    assert len(started) == 1, started
    assert all(gone(env, f"{uname}-{i}") for i in range(n))


def test_second_supervisor_refuses(sup: Supervisor, env: Env) -> None:
    with pytest.raises(AlreadyRunning):
        Supervisor(env.namespace, socket_dir=env.socket_dir).start()


def test_idle_exit_on_the_injected_clock(env: Env, uname: str) -> None:
    clock = FakeClock()
    s = Supervisor(env.namespace, socket_dir=env.socket_dir, clock=clock, idle_exit=60,
                   startup_grace=0.0).start()
    ch = shmring.Channel.create(uname, capacity=4096)
    clock.advance(120)
    s.wake()
    s.call(lambda: None)
    assert s._thread is not None and s._thread.is_alive()  # a region to watch: not idle
    ch.close()
    s.call(lambda: None)
    clock.advance(59)
    s.wake()
    s.call(lambda: None)
    assert s._thread.is_alive()
    clock.advance(2)
    s.wake()
    s._thread.join(5)
    assert not s._thread.is_alive()
    assert not os.path.exists(env.sock)


def test_daemon_stops_cleanly_on_sigterm(env: Env) -> None:
    p = subprocess.Popen([sys.executable, "-m", "shmring", "supervisor", "--namespace",
                          env.namespace, "--socket-dir", env.socket_dir],
                         stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(env.sock), 10, "the socket")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 0
    assert "stopped" in err and "INFO" in err
    assert not os.path.exists(env.sock)


def test_daemon_takes_over_from_an_auto_started_one(env: Env) -> None:
    first = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0).start()
    p = subprocess.Popen([sys.executable, "-m", "shmring", "supervisor", "--namespace",
                          env.namespace, "--socket-dir", env.socket_dir],
                         stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(p.stderr or ()), daemon=True)
    reader.start()
    try:
        # It says it waits (a started interpreter may take a while under load).
        wait_for(lambda: any("waiting to take over" in line for line in err), 30,
                 "the daemon to wait for the lock")
        assert p.poll() is None  # waiting, not gone
        assert env.supervisor_pid() == os.getpid()
        first.stop()
        wait_for(lambda: env.supervisor_pid() == p.pid, 10, "the take-over")
        wait_for(lambda: os.path.exists(env.sock), 10, "its socket")
    finally:
        first.stop()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
        reader.join(10)
    assert p.returncode == 0


# --------------------------------------------------------------- security --
def _as_nobody(fn_body: str, env: Env, uname: str) -> dict[str, Any]:
    """Run checks (Python source that fills ``out``) as another user."""
    names = {"env": env, "uname": uname, "socket": socket, "shmring": shmring, "_ipc": _ipc,
             "posix_ipc": posix_ipc}
    return as_nobody(lambda out: exec(fn_body, {**names, "out": out}))


CHECKS = """
def attempt(key, fn):
    try:
        fn()
        out[key] = "allowed"
    except (PermissionError, posix_ipc.PermissionsError):
        out[key] = "denied"
    except Exception as e:
        out[key] = type(e).__name__
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
attempt("connect", lambda: s.connect(env.sock))
attempt("attach", lambda: shmring.Channel.open(uname, supervised=False))
attempt("shm_open", lambda: posix_ipc.SharedMemory("/shmring." + env.namespace + "." + uname))
"""


def test_another_user_can_neither_connect_nor_attach(sup: Supervisor, env: Env,
                                                      uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096)
    try:
        out = _as_nobody(CHECKS, env, uname)
        assert out == {"connect": "denied", "attach": "denied", "shm_open": "denied"}, out
    finally:
        ch.close()


def test_peer_credentials_are_checked_even_if_the_directory_is_open(
        sup: Supervisor, env: Env, uname: str) -> None:
    os.chmod(env.socket_dir, 0o755)
    os.chmod(env.sock, 0o777)
    body = """
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
s.connect(env.sock)
out["connected"] = "yes"
try:
    _ipc.send(s, {"op": "status", "id": 1})
    msg, _ = _ipc.recv(s)
    out["reply"] = "none" if msg is None else "got one"
except OSError as e:
    out["reply"] = type(e).__name__
"""
    out = _as_nobody(body, env, uname)
    assert out.get("connected") == "yes", out
    assert out.get("reply") in ("none", "ConnectionResetError", "BrokenPipeError"), out
    assert sup.call(lambda: len(sup._conns)) == 0


def test_socket_directory_owned_by_another_user_is_refused(tmp_path: object) -> None:
    d = os.path.join(str(tmp_path), "squatted")
    os.mkdir(d, 0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(shmring.PermissionDenied):
        _ipc.ensure_private_dir(d)


# ------------------------------------------------------ namespaces, tmpfs --
def _unshare_works(*flags: str) -> bool:
    try:
        return subprocess.run(["unshare", *flags, "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


PIDNS_CHILD = """
import os, sys, time, shmring
ch = shmring.Channel.create(sys.argv[1], capacity=4096, pattern="mpsc")
tx = ch.producer()
tx.send(b"from pid %d" % os.getpid())
claim = tx.claim(64)
print("ready", flush=True)
time.sleep(60)
"""


def _descendants(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            for c in f.read().split():
                out += [int(c), *_descendants(int(c))]
    return out


@pytest.mark.skipif(not _unshare_works("-p", "-f"), reason="no PID namespaces here")
def test_client_in_a_pid_namespace(sup: Supervisor, env: Env, uname: str) -> None:
    p = subprocess.Popen(["unshare", "-p", "-f", "--kill-child", sys.executable, "-c",
                          PIDNS_CHILD, uname], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        ch = shmring.Channel.open(uname)
        rx = ch.consumer()
        assert rx.recv(timeout=1) == b"from pid 1"  # its own pid 1, not ours
        (inner,) = [d for d in _descendants(p.pid) if d != p.pid]
        ch.close()
        assert not gone(env, uname)  # pid 1 in its table is judged by its registration
        os.kill(inner, signal.SIGKILL)
        wait_for(lambda: gone(env, uname), 5, "the unlink")
    finally:
        p.kill()
        p.wait(10)


TMPFS_SCRIPT = """
set -e
mount -t tmpfs -o size=256k tmpfs /dev/shm
exec "$PYTHON" - <<'EOF'
import json, os, shmring
from shmring._supervisor.server import Supervisor
out = {}
with Supervisor(os.environ["SHMRING_NAMESPACE"], startup_grace=0.0) as sup:
    chans = []
    try:
        for i in range(100):
            chans.append(shmring.Channel.create("full-%d" % i, capacity=1 << 14))
    except shmring.NoSpace as e:
        out["nospace_after"] = len(chans)
    out["left_after_failure"] = len([e for e in os.listdir("/dev/shm") if e.startswith("shmring.")])
    chans[0].producer().send(b"still works")
    out["recv"] = chans[0].consumer().recv(timeout=1).decode()
    for ch in chans:
        ch.close()
    out["left"] = [e for e in os.listdir("/dev/shm") if e.startswith("shmring.")]
    out["stats"] = sup.call(lambda: sup.stats)
out["after_stop"] = os.listdir("/dev/shm")  # the instance guard went with the supervisor
print(json.dumps(out))
EOF
"""


@pytest.mark.skipif(not _unshare_works("-m"), reason="no mount namespaces here")
def test_full_dev_shm(env: Env) -> None:
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        TMPFS_SCRIPT], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHON": sys.executable})
    if p.returncode != 0 and "mount" in p.stderr and "permission" in p.stderr.lower():
        pytest.skip("cannot mount a tmpfs here")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["nospace_after"] >= 1  # a clean NoSpace, no SIGBUS
    assert out["left_after_failure"] == out["nospace_after"]  # the failed one left nothing
    assert out["recv"] == "still works"
    assert out["left"] == []
    assert out["stats"]["unlinked"] == out["nospace_after"]
    assert out["after_stop"] == []


# ------------------------------------------------------------------ misc --
def test_status_mirrors_the_attach_table(sup: Supervisor, env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096)
    st = env.connection().status()
    (region,) = st["regions"]
    assert region["holders"] == [{"pid": os.getpid(), "start_time": my_start_time(),
                                  "count": 1}]
    assert {s.pid for s in ch.region.slots()} == {os.getpid()}
    snap = _gc.snapshot(env.namespace, uname)
    assert _gc.verdict(snap) == "live"
    ch.close()


def test_client_reconnects_when_the_connection_drops(sup: Supervisor, env: Env,
                                                     uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096)
    conn = env.connection()
    conn.disconnect()  # a live process without its connection still holds the region
    assert not gone(env, uname)
    ch.close()  # reconnects, says hello with what it holds, then detaches
    assert gone(env, uname)
    assert _client.enabled(None)
