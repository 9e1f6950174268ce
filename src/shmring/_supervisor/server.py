"""The supervisor: owns the lifetime of every region of one namespace.

One per user and namespace (an ``flock`` on ``<ns>.lock`` in the private
socket directory, held for the supervisor's life). Clients connect to
``<ns>.sock`` (``SOCK_SEQPACKET``), say ``hello`` with their pidfd, and
register every ``attach`` and ``detach`` of a region. The supervisor acts on
events, never on polling:

- a client's pidfd becomes readable when it has exited (crash or not): its
  slots in every tracked region are recovered, its registrations go, and
  every region left with no live process is unlinked (persistent ones aside);
- a detach that leaves a region with no holder unlinks it before the reply,
  so that when ``Channel.close()`` returns in the last user the name is gone;
- socket EOF alone is not death (a process may close the connection and live
  on): its registrations stay until its pidfd fires;
- periodic checks revoke stuck claims (and mpmc records past their lease).

After a restart nothing is lost: regions are mapped again from /dev/shm
("adopted"); for ``startup_grace`` seconds no table entry is judged dead
(clients re-register meanwhile); then every adopted region is evaluated and
orphans are unlinked.

This module is the event loop (one ``selectors`` epoll, timers on the
injectable clock, calls from other threads), the connections and the
dispatch of requests. It owns and wires three collaborators, each of which
knows nothing of this module and gets what it needs as arguments and
callbacks:

- ``deaths.ProcessIndex``: watched processes, their pidfds, who died;
- ``regions.RegionTable``: tracked regions, who holds each, the unlink rule;
- ``revoke.ClaimWatch``, ``lease.LeaseWatch``: stuck claims, quarantines, leases.

``command.py`` is the ``shmring supervisor`` command around it. Not here:
the data path. Channels never wait for the supervisor, and a dead supervisor
stops nothing but cleanup until a new one is started.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import selectors
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import ShmringError
from .._region import inventory as _gc
from .._region.names import check_namespace, default_namespace
from . import instance as _instance
from . import procfs
from . import status as _status
from . import wire as _ipc
from .deaths import Proc, ProcessIndex
from .lease import DEFAULT_LEASE, LeaseWatch
from .listener import CHECK_EVERY, Listener, relock
from .loop import EventLoop
from .regions import RegionTable, Tracked
from .revoke import DEFAULT_CLAIM_TIMEOUT, ClaimWatch

__all__ = ["DEFAULT_CLAIM_TIMEOUT", "AlreadyRunning", "Supervisor"]

log = logging.getLogger("shmring.supervisor")


class AlreadyRunning(ShmringError):
    """Another supervisor holds the namespace's lock."""


@dataclass(eq=False)
class _Conn:
    """A client connection (its process once it said hello)."""

    sock: socket.socket
    peer_pid: int
    proc: Proc | None = None
    hello_items: list[Any] = field(default_factory=list)


_LIVE: weakref.WeakSet[Supervisor] = weakref.WeakSet()


def _close_in_child() -> None:
    # A forked child must not keep the namespace lock (flock belongs to the
    # open file, which the child shares) nor the sockets of a supervisor that
    # runs in its parent.
    for sup in list(_LIVE):
        sup._forget_fds()


os.register_at_fork(after_in_child=_close_in_child)


def _own_inodes() -> list[int]:
    # An embedded supervisor shares its process with a client: the mappings
    # the supervisors of this process hold are not the client's.
    return [ino for sup in list(_LIVE) for ino in sup.regions.inodes()]


def _mapped_inodes(pid: int) -> dict[int, int] | None:
    return procfs.mapped_inodes(pid, _own_inodes)


class Supervisor:
    """The supervisor of one namespace, in this process.

    ``start()`` runs it in a daemon thread (embedding, tests); ``run()`` runs
    it in the calling thread until ``stop()`` (``shmring supervisor``). Use
    as a context manager to start and stop it::

        with Supervisor("myns", socket_dir=tmp) as sup:
            ...  # clients with SHMRING_SOCKET_DIR=tmp talk to it

    ``clock`` (seconds, monotonic) drives every timeout; a test may pass a
    fake one and call :meth:`wake` after moving it. ``claim_timeout``: revoke
    a producer's claim held longer than this many seconds (None or 0: never).
    ``lease_timeout``: the same for a consumer's mpmc record (lease.py).
    ``idle_exit``: stop after that many seconds with no region (auto-start).
    Raises :class:`AlreadyRunning` from ``start``/``run`` if the namespace is taken.
    """

    def __init__(
        self,
        namespace: str | None = None,
        *,
        socket_dir: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        idle_exit: float | None = None,
        startup_grace: float = 1.0,
        creation_grace: float = _gc.CREATION_GRACE,
        claim_timeout: float | None = DEFAULT_CLAIM_TIMEOUT,
        lease_timeout: float | None = DEFAULT_LEASE,
    ) -> None:
        self.namespace = check_namespace(default_namespace() if namespace is None else namespace)
        self._dir = socket_dir
        self.clock = clock
        self.idle_exit = idle_exit
        self.startup_grace = startup_grace
        self.paths: dict[str, str] = {}
        self.loop = EventLoop(clock)
        self._schedule = self.loop.schedule
        self._lock_fd = -1
        self._guard: _instance.Guard | None = None
        self._listener: socket.socket | None = None
        self._listening = Listener("")
        self._conns: dict[int, _Conn] = {}
        self._idle_since: float | None = None
        self._idle_timer = False
        self._deferred: list[tuple[_Conn, Any, Tracked]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._opened = False
        self.stats = {"attach": 0, "detach": 0, "deaths": 0, "recovered": 0, "unlinked": 0,
                      "revoked": 0, "lifted": 0}
        self.procs = ProcessIndex(self.stats, self._on_death)
        self.regions = RegionTable(
            self.namespace, self.procs, self.stats, clock=clock, schedule=self._schedule,
            creation_grace=creation_grace, mapped_inodes=_mapped_inodes,
            on_tracked=self._on_tracked, on_untracked=self._update_idle)
        self.claims = ClaimWatch(
            claim_timeout or None, self.stats, regions=lambda: self.regions, clock=clock,
            schedule=self._schedule, stopping=lambda: self._stopping)
        self.leases = LeaseWatch(lease_timeout or None, self.stats, self.regions, clock=clock,
                                 schedule=self._schedule, stopping=lambda: self._stopping)

    @property
    def claim_timeout(self) -> float | None:
        """Seconds a producer may hold one claim (None: never revoked)."""
        return self.claims.claim_timeout

    @property
    def creation_grace(self) -> float:
        """Seconds a region may stay without any attach slot while its creator lives."""
        return self.regions.creation_grace

    # ----------------------------------------------------------- lifecycle --
    def open(self, *, wait: bool = False) -> None:
        """Take the namespace lock, listen, and adopt the regions already in
        /dev/shm. ``run``/``start`` call this. With ``wait``, a supervisor
        already running is waited for (until :meth:`stop`) instead of raising
        :class:`AlreadyRunning`."""
        if self._opened:
            return
        self.paths = _ipc.paths(self.namespace, self._dir)
        fd = os.open(self.paths["lock"], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or self._stopping:
                    os.close(fd)
                    raise AlreadyRunning(
                        f"a supervisor already runs for namespace {self.namespace!r}"
                    ) from None
            if not logged:
                log.info("another supervisor runs for %r: waiting to take over", self.namespace)
                logged = True
            time.sleep(0.2)
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._take_guard(wait=wait)
        self.loop.open()
        # Pidfds in an epoll of their own, nested in the main one: handling
        # every death already queued is then one epoll_wait(0).
        self.loop.register(self.procs.open(), lambda _k: self.procs.drain())
        self._listen()
        _LIVE.add(self)
        self._opened = True
        self.regions.grace_until = self.clock() + self.startup_grace
        self.regions.adopt_all()
        self._schedule(self.regions.grace_until, self._end_grace)
        self._update_idle()
        log.info("supervisor %d for namespace %r on %s", os.getpid(), self.namespace,
                 self.paths["sock"])

    def _take_guard(self, *, wait: bool) -> None:
        """Take the namespace's guard in /dev/shm (``instance.py``): another
        supervisor of this user and namespace may run with another socket
        directory. Without ``wait`` that is :class:`AlreadyRunning`."""
        guard = _instance.Guard(self.namespace, self.paths["sock"])
        logged = False
        while (other := guard.try_acquire()) is not None:
            if not wait or self._stopping:
                os.close(self._lock_fd)
                self._lock_fd = -1
                raise AlreadyRunning(
                    f"a supervisor already runs for namespace {self.namespace!r} (pid "
                    f"{other.pid}, socket {other.socket}); its clients find it there")
            if not logged:
                log.info("supervisor %d runs for %r on %s: waiting to take over", other.pid,
                         self.namespace, other.socket)
                logged = True
            time.sleep(0.2)
        self._guard = guard

    def _listen(self) -> None:
        # Whatever is at the path is a dead supervisor's: we hold the lock.
        self._listening = Listener(self.paths["sock"])
        self._listener = self._listening.open()
        self.loop.register(self._listener, self._on_accept)
        self._schedule(self.clock() + CHECK_EVERY, self._check_socket)

    def _check_socket(self) -> None:
        """Listen again where clients look if the socket's path (or its
        directory) was removed, and take the lock file again (listener.py)."""
        if self._stopping or self._listener is None:
            return
        if not self._listening.reachable():
            try:
                new = self._listening.reopen()
            except OSError as e:
                if self._listening.failures % 60 == 1:  # once a minute, not every second
                    log.error("%s was removed and cannot be made again: %s",
                              self.paths["sock"], e)
            else:
                log.warning("%s was removed: listening there again", self.paths["sock"])
                self.loop.unregister(self._listener)
                self._listener = new
                self.loop.register(new, self._on_accept)
                self._lock_fd = relock(self.paths["lock"], self._lock_fd)
        self._schedule(self.clock() + CHECK_EVERY, self._check_socket)

    def run(self, *, wait: bool = False) -> None:
        """Serve until :meth:`stop` (or idle exit). ``wait``: see :meth:`open`."""
        self.open(wait=wait)
        try:
            self.loop.run(lambda: self._stopping)
        finally:
            self._shutdown()

    def start(self) -> Supervisor:
        """Run in a daemon thread; returns once it listens."""
        self.open()
        self._thread = threading.Thread(target=self.run, daemon=True,
                                        name=f"shmring-supervisor-{self.namespace}")
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (regions stay; a new supervisor adopts them)."""
        self._stopping = True
        self.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Make the loop look at its timers now (after moving a fake clock)."""
        self.loop.wake()

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` in the supervisor's thread, after everything it has
        received so far; returns its result (tests use it to synchronise)."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the supervisor is not running in a thread")
        return self.loop.call(fn, timeout)

    def _shutdown(self) -> None:
        if not self._opened:
            return
        self._opened = False
        _LIVE.discard(self)
        if self._listener is not None:
            self._listening.close()  # the path too, if it is still ours
            self._listener = None
        for c in list(self._conns.values()):
            c.sock.close()
        self._conns.clear()
        self.procs.close()
        self.regions.close()
        self.loop.close()
        if self._guard is not None:
            self._guard.release()
            self._guard = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1
        log.info("supervisor %d for namespace %r stopped", os.getpid(), self.namespace)

    def _forget_fds(self) -> None:
        """In a forked child: drop every descriptor without touching what
        they refer to (the parent's supervisor goes on)."""
        if self._guard is not None:
            self._guard.after_fork()
            self._guard = None
        fds = [self._lock_fd, *self.loop.fds()]
        if self._listener is not None:
            fds.append(self._listener.detach())
        fds += [c.sock.detach() for c in self._conns.values()]
        fds += self.procs.fds()
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._opened = False
        self._thread = None

    # -------------------------------------------------------------- timers --
    def _end_grace(self) -> None:
        if self.regions.in_grace():  # the clock went backwards (a test's fake one)
            self._schedule(self.regions.grace_until, self._end_grace)
            return
        self.regions.evaluate_all()
        deferred, self._deferred = self._deferred, []
        for c, msg_id, t in deferred:
            if self._conns.get(c.sock.fileno()) is c:
                self._send(c, {"ok": True, "id": msg_id,
                               "unlinked": self.regions.get(t.key) is not t})

    def _update_idle(self) -> None:
        if self.idle_exit is None:
            return
        if self.regions or any(p.creating for p in self.procs):
            self._idle_since = None
            return
        if self._idle_since is None:
            self._idle_since = self.clock()
            if not self._idle_timer:
                self._idle_timer = True
                self._schedule(self._idle_since + self.idle_exit, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = False
        since = self._idle_since
        if since is None or self.idle_exit is None or self._stopping:
            return
        if self.clock() < since + self.idle_exit:
            self._idle_timer = True
            self._schedule(since + self.idle_exit, self._idle_check)
            return
        log.info("idle for %.1f s: exiting", self.idle_exit)
        self._stopping = True

    # -------------------------------------------------------------- events --
    def _on_accept(self, key: selectors.SelectorKey) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    log.error("out of file descriptors: %s", e)
                    return
                raise
            pid, uid, _gid = _ipc.peer_credentials(sock)
            if uid != os.geteuid():
                log.warning("refused a connection from uid %d (pid %d)", uid, pid)
                sock.close()
                continue
            sock.settimeout(1.0)  # replies only: a client that stops reading is dropped
            c = _Conn(sock, pid)
            self._conns[sock.fileno()] = c
            self.loop.register(sock, self._on_message)

    def _on_message(self, key: selectors.SelectorKey) -> None:
        c = self._conns.get(key.fd)
        if c is None:
            return
        try:
            msg, fds = _ipc.recv(c.sock)
        except (OSError, ValueError) as e:
            log.warning("dropping client %d: %s", c.peer_pid, e)
            msg, fds = None, []
        if msg is None:
            self._drop_conn(c)
            return
        try:
            reply = self._handle(c, msg, fds)
        except Exception as e:
            log.exception("request %r from pid %d failed", msg.get("op"), c.peer_pid)
            reply = {"ok": False, "error": "internal", "message": str(e)}
        finally:
            for fd in fds:  # those the handler did not keep
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        # "noreply": the client does not wait for this one (creating): a reply
        # nobody waits for is one send here and one pass-over there.
        if reply is not None and key.fd in self._conns and not msg.get("noreply"):
            reply["id"] = msg.get("id")
            self._send(c, reply)
        self._update_idle()

    def _send(self, c: _Conn, reply: dict[str, Any]) -> None:
        try:
            _ipc.send(c.sock, reply)
        except ValueError as e:  # too large: a bug, but the client must get an answer
            log.error("reply to %d not sent: %s", c.peer_pid, e)
            self._send(c, {"ok": False, "id": reply.get("id"), "error": "internal",
                           "message": str(e)})
        except OSError as e:
            log.warning("dropping client %d: %s", c.peer_pid, e)
            self._drop_conn(c)

    def _drop_conn(self, c: _Conn) -> None:
        fd = c.sock.fileno()
        self._conns.pop(fd, None)
        self.loop.unregister(c.sock)
        c.sock.close()
        p = c.proc
        if p is not None and p.conn is c:
            p.conn = None
            # EOF is not death: the process may live on; its pidfd tells.
            # Exiting processes close their sockets before their pidfd
            # fires, so look once now and let the selector do the rest.
            if self.procs.exited(p):
                self.procs.died(p)
            else:
                self.regions.reconcile(p)

    # ------------------------------------------------ collaborators' news --
    def _on_death(self, p: Proc) -> None:
        # Called by the process index once p has left it.
        if p.conn is not None:
            c, p.conn = p.conn, None
            assert isinstance(c, _Conn)
            self._drop_conn(c)
        self.regions.process_died(p)
        self._update_idle()

    def _on_tracked(self, t: Tracked) -> None:
        self._idle_since = None
        self.claims.region_tracked(t)
        self.leases.region_tracked(t)

    def _check_claims(self) -> None:
        """Look at stuck claims now (tests call it in the loop's thread)."""
        self.claims.check()

    # ---------------------------------------------------------- requests --
    def _handle(self, c: _Conn, msg: dict[str, Any], fds: list[int]) -> dict[str, Any] | None:
        op = msg.get("op")
        if op == "hello":
            return self._hello(c, msg, fds)
        if op == "status":
            return {"ok": True, **self.status(limit=_ipc.MAX_MESSAGE - 1024)}
        p = c.proc
        if p is None:
            return {"ok": False, "error": "protocol", "message": "say hello first"}
        if op == "hello_more":
            return self._hello_items(c, msg)
        if op == "creating":  # "segs" (a list) or "seg" (one)
            for seg in map(str, msg["segs"] if "segs" in msg else [msg["seg"]]):
                if self.regions.own_segment(seg):
                    p.creating[seg] = self.clock()
            return {"ok": True}
        if op == "attach_all":  # [[seg, created_ns], ...]: one reply for all
            res_all = [self.regions.attach(p, str(s), int(n)) for s, n in msg["regions"]]
            return {"ok": all(r == "ok" for r in res_all), "results": res_all}
        if op == "abandon":
            p.creating.pop(str(msg["seg"]), None)
            return {"ok": True}
        if op == "attach":
            res = self.regions.attach(p, str(msg["seg"]), int(msg["created_ns"]))
            return {"ok": res == "ok", "error": None if res == "ok" else res}
        if op == "detach":
            k = (str(msg["seg"]), int(msg["created_ns"]))
            unlinked = self.regions.detach(p, *k)
            t = self.regions.get(k)
            if t is not None and t.uncertain:
                # Kept only for entries we may not judge yet (a restart's
                # grace): answer once we can, so that the last close still
                # returns with the name gone.
                self._deferred.append((c, msg.get("id"), t))
                return None
            return {"ok": True, "unlinked": unlinked}
        return {"ok": False, "error": "protocol", "message": f"unknown op {op!r}"}

    def _hello(self, c: _Conn, msg: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        if c.proc is not None:
            return {"ok": False, "error": "protocol", "message": "hello twice"}
        if msg.get("v") != _ipc.PROTOCOL:
            return {"ok": False, "error": "protocol",
                    "message": f"protocol {msg.get('v')!r}, this supervisor speaks "
                               f"{_ipc.PROTOCOL}"}
        lpid, start = int(msg["pid"]), int(msg["start"])
        pidfd = fds.pop(0) if fds else -1
        peer = c.peer_pid
        if pidfd >= 0 and peer > 0 and _ipc.pidfd_pid(pidfd) not in (peer, None):
            os.close(pidfd)
            return {"ok": False, "error": "protocol", "message": "the pidfd is not yours"}
        ns, bad = procfs.check_peer(peer, start, int(msg.get("pidns") or 0))
        if bad is not None:
            if pidfd >= 0:
                os.close(pidfd)
            return {"ok": False, "error": "protocol", "message": bad}
        if pidfd < 0:
            if peer <= 0:
                return {"ok": False, "error": "protocol", "message": "send a pidfd"}
            try:
                pidfd = os.pidfd_open(peer)
            except OSError:
                return {"ok": False, "error": "protocol", "message": "cannot watch you"}
        key = (peer if peer > 0 else -lpid, start)
        p = self.procs.get(key) or self.procs.by_table(lpid, start, ns)
        if p is not None and not p.dead:
            os.close(pidfd)
            if p.conn is not None and p.conn is not c:
                old, p.conn = p.conn, None
                assert isinstance(old, _Conn)
                self._drop_conn(old)
        else:
            p = self.procs.watch(key, lpid, start, pidfd, ns)
        p.conn = c
        c.proc = p
        c.hello_items = list(msg.get("items", []))
        if msg.get("more"):
            return {"ok": True, "pid": os.getpid()}
        return self._hello_done(c)

    def _hello_items(self, c: _Conn, msg: dict[str, Any]) -> dict[str, Any]:
        c.hello_items.extend(msg.get("items", []))
        if msg.get("more"):
            return {"ok": True, "pid": os.getpid()}
        return self._hello_done(c)

    def _hello_done(self, c: _Conn) -> dict[str, Any]:
        # The client's registrations, as a whole, replace what we knew.
        p = c.proc
        assert p is not None
        items, c.hello_items = c.hello_items, []
        results = self.regions.replace_holds(p, items)
        return {"ok": True, "pid": os.getpid(), "results": results}

    # -------------------------------------------------------------- status --
    def status(self, limit: int | None = None) -> dict[str, Any]:
        """What the supervisor knows (JSON-ready). With ``limit``, the lists
        of regions and processes are cut (``truncated``) to fit that many
        bytes of JSON; the counts are always whole."""
        return _status.report(self.namespace, self.regions, self.procs, self.stats,
                              connections=len(self._conns), limit=limit)
