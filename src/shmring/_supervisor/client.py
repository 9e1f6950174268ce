"""A process's connection to the supervisor of a namespace.

One :class:`Connection` per process, socket directory and namespace, made on
the first supervised ``Channel.create``/``open``. It sends ``hello`` (pid,
start time, and a pidfd of this process over ``SCM_RIGHTS``), then one request
per attach and detach, each answered before the call returns: when
``Channel.close()`` returns in the last user, the region is already unlinked.

- **Auto-start.** If nobody listens, the client starts ``python -m shmring
  supervisor --exit-when-idle ... --daemonize`` (new session, stdio to
  /dev/null, cwd /; the daemonizing parent exits at once so the supervisor is
  nobody's zombie) and retries with backoff. Of many clients starting at once,
  only the holder of ``<ns>.spawn`` spawns (a record lock, which a forked
  child does not inherit); a second supervisor would exit anyway on
  ``<ns>.lock``. Whatever keeps a supervisor from being reached or started
  (an unusable ``SHMRING_SOCKET_DIR``, an interpreter this user cannot run)
  is a :class:`SupervisorUnavailable` that says what to do, the cause
  chained.
- **Reconnect.** A watcher thread (blocked in ``poll(POLLRDHUP)``, so it
  never wakes for replies) notices the supervisor's exit and connects to a
  new one, starting it if needed, and re-registers everything in ``hello``.
  It runs only while this process holds regions (a daemon named
  ``shmring-watch-<ns>``), and is stopped and joined when the last one is
  closed, when the connection closes and at interpreter exit. A request that meets EOF is retried on
  the new connection; the local registry only changes once the supervisor
  acknowledged, so replaying is exact.
- **Fork.** ``os.register_at_fork``: the child drops the parent's socket
  (closing a shared socket sends no EOF) and registers itself for the regions
  the parent held, so a forked child keeps them alive while it lives. If the
  child then ``exec``s, its connection closes (``SOCK_CLOEXEC``) and the
  supervisor finds the region no longer in its ``/proc/<pid>/maps``.

``SHMRING_SUPERVISOR=0`` (or ``supervised=False``) bypasses all of this.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import logging
import os
import select
import socket
import subprocess
import threading
import time
from typing import Any

from .._errors import PermissionDenied, RegionNotFound, ShmringError, SupervisorUnavailable
from .._proc import my_start_time, pid_namespace
from . import instance as _instance
from . import launch as _launch
from . import wire as _ipc

log = logging.getLogger("shmring.client")

#: Seconds to reach (or start) a supervisor before giving up.
CONNECT_TIMEOUT = 15.0
#: Seconds to wait for one reply. A bound, not a liveness probe: the
#: supervisor's death shows as EOF at once; a busy one is waited for (giving
#: up early would add a reconnect and a hello to its load).
REQUEST_TIMEOUT = 30.0
#: An auto-started supervisor exits after this many idle seconds
#: (``$SHMRING_SUPERVISOR_IDLE``).
IDLE_EXIT = 3.0


class Stale(RegionNotFound):
    """The region's name was removed, or now names another region, while we
    were attaching: open it again."""


def enabled(supervised: bool | None = None) -> bool:
    """Whether channels register with a supervisor: ``supervised`` if given,
    else ``$SHMRING_SUPERVISOR`` (default on; ``0``/``false``/``no``/``off``)."""
    if supervised is not None:
        return bool(supervised)
    return os.environ.get("SHMRING_SUPERVISOR", "1").strip().lower() not in (
        "0", "false", "no", "off")


_conns: dict[tuple[str, str], Connection] = {}
_conns_lock = threading.Lock()


def connection(namespace: str, directory: str | None = None) -> Connection:
    """This process's connection for ``namespace`` (made on first use, not yet
    connected)."""
    try:
        d = _ipc.socket_dir() if directory is None else directory
        with _conns_lock:
            c = _conns.get((d, namespace))
            if c is None:
                c = _conns[(d, namespace)] = Connection(namespace, d)
            return c
    except ShmringError:
        raise
    except OSError as e:
        # Not a RegionNotFound's FileNotFoundError, nor a region's
        # PermissionError: the supervisor's directory is what is wrong.
        where = directory or os.environ.get("SHMRING_SOCKET_DIR") or "the socket directory"
        raise SupervisorUnavailable(
            f"cannot use {where!r} for the supervisor of namespace {namespace!r} "
            f"({e.strerror or e}): {_WHAT_TO_DO}") from e


#: Longest AF_UNIX socket path on Linux (sun_path less its terminating NUL).
_SUN_PATH_MAX = 107
#: The end of every SupervisorUnavailable message that a user can act on.
_WHAT_TO_DO = ("fix SHMRING_SOCKET_DIR (a directory this user owns or may create), run "
               "`shmring supervisor` yourself, or set SHMRING_SUPERVISOR=0 to run without one")


def disconnect_all() -> None:
    """Close every connection of this process (tests: lets an idle supervisor
    exit). Registrations stay on record with the supervisor until this process
    exits or detaches."""
    with _conns_lock:
        conns = list(_conns.values())
    for c in conns:
        c.disconnect()


class Connection:
    """The connection to one namespace's supervisor. Thread-safe."""

    def __init__(self, namespace: str, directory: str) -> None:
        self.namespace = namespace
        self.directory = directory
        self.paths = _ipc.paths(namespace, directory)
        self.holds: dict[tuple[str, int], int] = {}
        self.supervisor_pid: int | None = None
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._watch_r = self._watch_w = -1
        # The background thread (watcher, or reconnector after the
        # supervisor's death) and the event that tells it to stop.
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ids = itertools.count(1)

    # -------------------------------------------------------------- requests --
    def creating(self, seg: str) -> None:
        """Announce the creation of ``seg`` (if we die before attaching it, the
        supervisor removes what we left). Not waited for: the supervisor reads
        a connection's messages in order, even after the sender died, so this
        one is handled before the ``attach`` that follows (whose reply is
        waited for). Sent with ``noreply``: the supervisor answers it not at
        all (one reply less to send and to pass over)."""
        with self._lock:
            if self._sock is not None:
                msg = {"op": "creating", "seg": seg, "id": next(self._ids), "noreply": True}
                try:
                    _ipc.send(self._sock, msg)
                    return
                except OSError:
                    self._close_sock()  # gone: the waited-for path reconnects
            self._request({"op": "creating", "seg": seg})

    def abandon(self, seg: str) -> None:
        """The creation announced for ``seg`` failed: nothing to watch."""
        with contextlib.suppress(ShmringError):
            self._request({"op": "abandon", "seg": seg}, connect=False)

    def attach(self, seg: str, created_ns: int) -> None:
        """Register that this process uses the region. Raises :class:`Stale`
        if the name no longer refers to it."""
        reply = self._request({"op": "attach", "seg": seg, "created_ns": created_ns})
        if reply.get("ok"):
            with self._lock:
                k = (seg, created_ns)
                self.holds[k] = self.holds.get(k, 0) + 1
                self._sync_watcher()
            return
        err = reply.get("error")
        if err in ("gone", "stale", "unpublished"):
            raise Stale(f"region {seg!r} was removed or replaced while opening it")
        raise ShmringError(f"the supervisor refused to register region {seg!r}: {err}")

    def detach(self, seg: str, created_ns: int) -> bool:
        """Unregister one use of the region; True if the supervisor unlinked it
        (we were the last user). Never raises: if no supervisor can be reached,
        the next one finds the region unused and removes it."""
        k = (seg, created_ns)
        with self._lock:
            if k not in self.holds:
                return False
            try:
                reply = self._request({"op": "detach", "seg": seg, "created_ns": created_ns})
            except ShmringError as e:
                log.warning("detach of %s not acknowledged: %s", seg, e)
                reply = {}
            finally:
                n = self.holds.get(k, 0) - 1
                if n > 0:
                    self.holds[k] = n
                else:
                    self.holds.pop(k, None)
                self._sync_watcher()
            return bool(reply.get("unlinked"))

    def status(self) -> dict[str, Any]:
        """The supervisor's view of the namespace."""
        return self._request({"op": "status"})

    def disconnect(self) -> None:
        """Close the connection (it is made again on the next request) and
        stop its background thread."""
        with self._lock:
            self._close_sock()
            self._stop_thread()

    def stop_watching(self) -> None:
        """Stop and join the background thread, keeping the connection (at
        interpreter exit: nothing is left to re-register for)."""
        if not self._lock.acquire(timeout=5.0):  # held by a stuck request: leave it be
            return
        try:
            self._stop_thread()
        finally:
            self._lock.release()

    def _request(self, msg: dict[str, Any], *, connect: bool = True) -> dict[str, Any]:
        with self._lock:
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while True:
                if self._sock is None:
                    if not connect:
                        raise SupervisorUnavailable(
                        f"not connected to the supervisor of namespace {self.namespace!r}")
                    self._connect(deadline)
                sock = self._sock
                assert sock is not None
                msg["id"] = next(self._ids)
                try:
                    _ipc.send(sock, msg)
                    while True:
                        reply, fds = _ipc.recv(sock)
                        for fd in fds:
                            os.close(fd)
                        if reply is None:
                            raise ConnectionResetError("the supervisor closed the connection")
                        if reply.get("id") == msg["id"]:
                            return reply
                except (OSError, ValueError) as e:
                    # The supervisor died (or hangs): a new one gets our whole
                    # state in hello, then this request again.
                    self._close_sock()
                    if time.monotonic() >= deadline:
                        raise SupervisorUnavailable(
                            f"no reply from the supervisor of namespace {self.namespace!r}: "
                            f"{e}") from e

    # ------------------------------------------------------------ connecting --
    def _connect(self, deadline: float, *, autostart: bool = True) -> None:
        """Connect (starting a supervisor if none runs) and say hello."""
        while True:
            sock = self._dial(deadline, autostart)
            try:
                self._hello(sock)
                return
            except (OSError, ValueError) as e:
                sock.close()
                if time.monotonic() >= deadline:
                    raise SupervisorUnavailable(
                        f"the supervisor of namespace {self.namespace!r} does not answer: {e}"
                    ) from e
                time.sleep(0.01)

    def _hello(self, sock: socket.socket) -> None:
        sock.settimeout(REQUEST_TIMEOUT)
        items = [[seg, cns, n] for (seg, cns), n in self.holds.items()]
        chunks = [items[i:i + _ipc.HELLO_CHUNK] for i in range(0, len(items), _ipc.HELLO_CHUNK)]
        chunks = chunks or [[]]
        pidfd = os.pidfd_open(os.getpid())
        try:
            reply: dict[str, Any] | None = None
            for i, chunk in enumerate(chunks):
                msg: dict[str, Any] = {"op": "hello" if i == 0 else "hello_more",
                                       "id": next(self._ids), "items": chunk,
                                       "more": i + 1 < len(chunks)}
                if i == 0:
                    msg.update(v=_ipc.PROTOCOL, pid=os.getpid(), start=my_start_time(),
                               pidns=pid_namespace())
                    _ipc.send(sock, msg, [pidfd])
                else:
                    _ipc.send(sock, msg)
                reply, fds = _ipc.recv(sock)
                for fd in fds:
                    os.close(fd)
                if reply is None:
                    raise ConnectionResetError("the supervisor closed the connection")
                if not reply.get("ok"):
                    raise ShmringError(f"the supervisor refused us: {reply.get('message')}")
        finally:
            os.close(pidfd)
        assert reply is not None
        # Regions the new supervisor could not find are not ours to hold.
        for key, res in reply.get("results", {}).items():
            if res != "ok":
                seg, _, cns = key.rpartition("@")
                self.holds.pop((seg, int(cns)), None)
        self.supervisor_pid = int(reply["pid"])
        self._sock = sock
        self._sync_watcher()

    def _dial(self, deadline: float, autostart: bool) -> socket.socket:
        delay = 0.001
        last_spawn = -1e9
        spawn_fd = -1
        try:
            while True:
                # The namespace's supervisor may listen in another socket
                # directory than ours (another environment started it): its
                # guard in /dev/shm says where (instance.py).
                holder = _instance.holder(self.namespace)
                target = holder.socket if holder is not None else self.paths["sock"]
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
                try:
                    sock.connect(target)
                    return sock
                except (FileNotFoundError, ConnectionRefusedError):
                    sock.close()
                except PermissionError as e:
                    sock.close()
                    raise PermissionDenied(f"cannot connect to {target!r}: {e}") from e
                except OSError as e:  # e.g. a path longer than AF_UNIX allows
                    sock.close()
                    raise SupervisorUnavailable(
                        f"cannot connect to {target!r} ({e.strerror or e}; "
                        f"socket paths are limited to {_SUN_PATH_MAX} bytes): "
                        f"{_WHAT_TO_DO}") from e
                except BaseException:
                    sock.close()
                    raise
                now = time.monotonic()
                if autostart and now - last_spawn > 2.0:
                    if spawn_fd < 0:
                        spawn_fd = self._spawn_lock()
                    if spawn_fd >= 0:
                        self._spawn()
                        last_spawn = time.monotonic()
                        continue
                if now >= deadline or not autostart:
                    raise SupervisorUnavailable(
                        f"no supervisor for namespace {self.namespace!r} at "
                        f"{self.paths['sock']!r}"
                        + (f" (one was started but did not listen; see {self.paths['log']!r})"
                           if autostart and last_spawn > 0 else
                           "" if autostart else " (not started: auto-start is off here)")
                        + "; start one with `shmring supervisor`, or set SHMRING_SUPERVISOR=0"
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 0.05)
        finally:
            if spawn_fd >= 0:
                os.close(spawn_fd)

    def _spawn(self) -> None:
        # The directory holding the shmring package (not the package itself,
        # whose modules would then shadow the standard library's: logging).
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"]
                                        if env.get("PYTHONPATH") else "")
        idle = os.environ.get("SHMRING_SUPERVISOR_IDLE", str(IDLE_EXIT))
        python = _launch.interpreter(env)
        cmd = [python, "-m", "shmring", "supervisor", "--namespace", self.namespace,
               "--socket-dir", self.directory, "--exit-when-idle", idle, "--daemonize"]
        log.debug("starting %s", " ".join(cmd))
        try:
            # What the launcher says before it daemonizes (an interpreter that
            # cannot import shmring, say) goes where the supervisor logs.
            with open(self.paths["log"], "ab") as err:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=err, start_new_session=True, close_fds=True,
                                        cwd="/", env=env)
        except OSError as e:
            # Say so now rather than after CONNECT_TIMEOUT of retries.
            raise SupervisorUnavailable(
                f"cannot start a supervisor for namespace {self.namespace!r}: running "
                f"{python!r} failed ({e.strerror or e}); set SHMRING_PYTHON to a Python that "
                "can import shmring, run `shmring supervisor` yourself (as this user), or set "
                "SHMRING_SUPERVISOR=0 to run without one"
            ) from e
        try:
            code = proc.wait(timeout=CONNECT_TIMEOUT)  # the daemonizing parent exits at once
        except subprocess.TimeoutExpired:
            log.warning("the supervisor launcher did not exit")
            return
        if code != 0:
            raise SupervisorUnavailable(
                f"cannot start a supervisor for namespace {self.namespace!r}: {python!r} "
                f"exited with status {code} (see {self.paths['log']!r}); set SHMRING_PYTHON to "
                "a Python that can import shmring, run `shmring supervisor` yourself, or set "
                "SHMRING_SUPERVISOR=0 to run without one")

    def _spawn_lock(self) -> int:
        try:
            return _try_spawn_lock(self.paths["spawn"])
        except OSError as e:
            raise SupervisorUnavailable(
                f"cannot start a supervisor for namespace {self.namespace!r}: "
                f"{self.paths['spawn']!r}: {e.strerror or e}; {_WHAT_TO_DO}") from e

    # -------------------------------------------------------------- watching --
    # One background thread per connection, and only while this process holds
    # regions (without holds there is nothing to re-register, and a request
    # that meets EOF reconnects by itself). It is a daemon named
    # ``shmring-watch-<ns>``, stopped and joined when the holds end, when the
    # connection closes and at interpreter exit, so test suites that check
    # for dangling threads find none. It never blocks on the lock while
    # asked to stop (see _lock_or_stop): the stopper holds the lock and joins.
    def _sync_watcher(self) -> None:
        """Under the lock: a watcher runs iff connected and holding regions."""
        if self.holds and self._sock is not None:
            if self._watch_w < 0:
                self._start_watcher(self._sock)
        elif self._sock is not None and self._watch_w >= 0:
            self._stop_thread()

    def _start_watcher(self, sock: socket.socket) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._stop_thread()
        r, w = os.pipe2(os.O_CLOEXEC)
        self._watch_r, self._watch_w = r, w
        self._stop = stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(sock, sock.fileno(), r, stop),
                                        name=f"shmring-watch-{self.namespace}", daemon=True)
        self._thread.start()

    def _wake_watcher(self) -> None:
        if self._watch_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._watch_w, b"x")
                os.close(self._watch_w)
            self._watch_w = -1

    def _stop_thread(self) -> None:
        """Under the lock: stop the background thread and join it (unless
        this is that thread)."""
        self._stop.set()
        self._wake_watcher()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)
            if t.is_alive():
                log.warning("the %s thread did not stop", t.name)

    def _lock_or_stop(self, stop: threading.Event) -> bool:
        """Take the lock, unless asked to stop meanwhile (False, not taken)."""
        while not self._lock.acquire(timeout=0.02):
            if stop.is_set():
                return False
        if stop.is_set():
            self._lock.release()
            return False
        return True

    def _close_sock(self) -> None:
        self._wake_watcher()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _watch(self, sock: socket.socket, fd: int, r: int, stop: threading.Event) -> None:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLRDHUP)
            poller.register(r, select.POLLIN)
            while True:
                events = poller.poll()
                if any(efd == r for efd, _ in events):
                    return  # we closed it ourselves
                if events:
                    break
        finally:
            os.close(r)
        # The supervisor is gone.
        if not self._lock_or_stop(stop):
            return
        try:
            if self._sock is not sock:
                return
            self._close_sock()
        finally:
            self._lock.release()
        self._reconnect(stop)

    def _reconnect(self, stop: threading.Event | None = None) -> None:
        stop = threading.Event() if stop is None else stop
        delay = 0.05
        while True:
            if not self._lock_or_stop(stop):
                return
            try:
                if self._sock is not None or not self.holds:
                    return
                try:
                    self._connect(time.monotonic() + CONNECT_TIMEOUT)
                    log.info("re-registered %d region(s) with supervisor %s",
                             len(self.holds), self.supervisor_pid)
                    return
                except (ShmringError, OSError) as e:
                    log.warning("cannot reach a supervisor for %r: %s", self.namespace, e)
            finally:
                self._lock.release()
            if stop.wait(delay):
                return
            delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ fork --
    def _forget(self) -> None:
        """In a forked child: drop the parent's descriptors, touching nothing
        they refer to."""
        self._lock = threading.RLock()
        # The write end of the parent's watcher pipe is ours to close; the
        # read end belongs to the parent's watcher thread, which may already
        # have closed it (its number may name something else now): left be.
        if self._watch_w >= 0:
            with contextlib.suppress(OSError):
                os.close(self._watch_w)
        self._watch_r = self._watch_w = -1
        self._thread = None  # the parent's thread: not in this process
        self._stop = threading.Event()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                os.close(self._sock.detach())
            self._sock = None


def _after_fork_in_child() -> None:
    global _conns_lock
    _conns_lock = threading.Lock()
    for c in list(_conns.values()):
        c._forget()
        if not c.holds:
            continue
        try:
            with c._lock:
                # The parent is connected, so a supervisor runs: no auto-start
                # from inside a fork hook; the watcher retries if it is gone.
                c._connect(time.monotonic(), autostart=False)
        except (ShmringError, OSError):
            with c._lock:
                c._stop = stop = threading.Event()
                c._thread = threading.Thread(target=c._reconnect, args=(stop,), daemon=True,
                                             name=f"shmring-watch-{c.namespace}")
                c._thread.start()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _stop_all_watchers() -> None:
    """At interpreter exit: stop and join every connection's thread (the
    connections stay open until the process ends)."""
    with _conns_lock:
        conns = list(_conns.values())
    for c in conns:
        c.stop_watching()


atexit.register(_stop_all_watchers)


def _try_spawn_lock(path: str) -> int:
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
