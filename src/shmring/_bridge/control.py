"""The bridge's local socket, and the client ``Channel.open(remote=...)`` uses.

A bridge listens on ``<socket dir>/bridge.<namespace>.sock`` (the
supervisor's per-user 0700 directory, so only this user reaches it), a
``SOCK_STREAM`` socket carrying one JSON object per line each way. Requests:

- ``{"op": "status"}``: the bridge's :meth:`Bridge.status`;
- ``{"op": "import", "name": N, "remote": URL, "timeout": S}``: connect to
  URL (unless already connected) and import channel N; the reply comes once
  the local ring exists and a stream feeds it, or says why not within S;
- ``{"op": "stop"}``: the bridge exits (as on SIGTERM).

One bridge per user and namespace: it holds ``bridge.<namespace>.lock``
(``flock``) in the same directory while it runs. :func:`ensure_import`
starts one (``python -m shmring bridge --namespace NS --exit-when-idle
10``, detached) when none runs, as clients start a supervisor; it exits
once no other local process has had a ring it feeds open for that long,
and the next ``Channel.open(remote=)`` starts another.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import threading
import time
from typing import Any

from .._channel import channel as _channel
from .._errors import BridgeUnavailable, InvalidArgument, PermissionDenied, Timeout
from .._region.names import check_namespace, default_namespace
from .._supervisor import launch
from .._supervisor.wire import socket_dir

log = logging.getLogger("shmring.bridge")

#: Seconds a client waits for a bridge it started to listen.
START_TIMEOUT = 15.0
#: A bridge started by a client exits after this many idle seconds: no
#: other local process has a ring it feeds open (``$SHMRING_BRIDGE_IDLE``).
IDLE_EXIT = 10.0


def paths(namespace: str) -> tuple[str, str]:
    """(socket, lock) paths of the bridge of ``namespace`` for this user."""
    d = socket_dir()
    return os.path.join(d, f"bridge.{namespace}.sock"), os.path.join(d, f"bridge.{namespace}.lock")


def take_lock(namespace: str) -> int:
    """The right to be ``namespace``'s bridge: a locked fd, or
    :class:`BridgeUnavailable` naming the running one."""
    _, lock = paths(namespace)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise BridgeUnavailable(
            f"a bridge already runs for namespace {namespace!r} (pid {pid or '?'}): stop it "
            "first, or use another namespace (--namespace)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Server:
    """The control socket of a running bridge (one thread)."""

    def __init__(self, bridge: Any, namespace: str, on_stop: Any) -> None:
        self.bridge, self.on_stop = bridge, on_stop
        self.path, _ = paths(namespace)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self.sock.listen(16)
        self._thread = threading.Thread(target=self._serve, name="shmring-bridge-control",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                try:
                    req = json.loads(line)
                    reply = self._handle(req)
                except Exception as e:  # every request gets an answer
                    reply = {"ok": False, "error": type(e).__name__, "message": str(e)}
                f.write(json.dumps(reply).encode() + b"\n")
                f.flush()

    def _handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "status":
            return {"ok": True, "status": self.bridge.status()}
        if op == "stop":
            self.on_stop()
            return {"ok": True}
        if op == "import":
            name, remote = str(req["name"]), str(req["remote"])
            timeout = float(req.get("timeout", 10.0))
            with self.bridge.answering():
                return self._import(name, remote, timeout)
        return {"ok": False, "error": "InvalidArgument", "message": f"unknown op {op!r}"}

    def _import(self, name: str, remote: str, timeout: float) -> dict[str, Any]:
        """Import ``name`` from ``remote``: the reply once a stream feeds the
        local ring, or why not within ``timeout`` seconds."""
        self.bridge.add_import(name)
        self.bridge.connect(remote)
        asked = time.monotonic()
        deadline = asked + timeout
        while not self.bridge.importing(name):
            refused = self.bridge.refusals.get(name)
            if refused is not None and refused[0] >= asked and refused[2] != "NotExported":
                # It cannot cross as it is (a growing queue, a ring here
                # of another shape): say so now. "Not exported" may change.
                return {"ok": False, "error": refused[2],
                        "message": f"{refused[1]}: {refused[3]}"}
            if time.monotonic() >= deadline:
                return {"ok": False, "error": "Timeout",
                        "message": f"no peer at {remote} exported {name!r} within "
                                   f"{timeout:g} s ({self._why(name)})"}
            time.sleep(0.01)
        return {"ok": True}

    def _why(self, name: str) -> str:
        st = self.bridge.status()
        peers = [p for p in st["peers"] if not p["down"]]
        if not peers:
            return "no peer answered"
        return "peers: " + ", ".join(p["name"] for p in peers)

    def close(self) -> None:
        """Stop listening and remove the socket."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(namespace: str, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request to the bridge of ``namespace``; its reply.
    ``FileNotFoundError``/``ConnectionRefusedError`` if none listens."""
    path, _ = paths(namespace)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        with s.makefile("rb") as f:
            line = f.readline()
    if not line:
        raise BridgeUnavailable(f"the bridge of namespace {namespace!r} closed the connection")
    reply: dict[str, Any] = json.loads(line)
    return reply


def _start(namespace: str) -> None:
    env = dict(os.environ)
    python = launch.interpreter(env)
    idle = os.environ.get("SHMRING_BRIDGE_IDLE", str(IDLE_EXIT))
    subprocess.Popen([python, "-m", "shmring", "bridge", "--namespace", namespace,
                      "--exit-when-idle", idle],
                     env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def ensure_import(name: str, remote: str, namespace: str | None = None,
                  timeout: float = 10.0) -> None:
    """Have this namespace's bridge import ``name`` from ``remote`` (starting
    the bridge if none runs); returns once the local ring is fed."""
    ns = check_namespace(default_namespace() if namespace is None else namespace)
    if not isinstance(remote, str) or "://" not in remote:
        raise InvalidArgument(f"remote must be a ZeroMQ endpoint such as "
                              f"'tcp://host:7470', not {remote!r}")
    req = {"op": "import", "name": name, "remote": remote, "timeout": timeout}
    deadline = time.monotonic() + START_TIMEOUT + timeout
    started = False
    while True:
        try:
            reply = request(ns, req, timeout + 5.0)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if not started:
                _start(ns)
                started = True
            if time.monotonic() >= deadline:
                raise BridgeUnavailable(
                    f"no bridge for namespace {ns!r} and none started within "
                    f"{START_TIMEOUT:g} s: run `shmring bridge --namespace {ns}` to see why"
                ) from None
            time.sleep(0.05)
        except PermissionError as e:
            raise PermissionDenied(f"cannot reach the bridge: {e}") from None
    if not reply.get("ok"):
        err = reply.get("error")
        msg = f"bridge: {reply.get('message')}"
        if err == "Timeout":
            raise Timeout(msg)
        if err == "InvalidArgument":  # what was asked for cannot cross as it is
            raise InvalidArgument(msg)
        raise BridgeUnavailable(msg)


_channel.set_remote_import(
    lambda name, remote, ns, timeout: ensure_import(name, remote, ns, timeout=timeout))
