"""The supervisor: owns the lifetime of every region of one namespace.

One per user and namespace (an ``flock`` on ``<ns>.lock`` in the private
socket directory, held for the supervisor's life). Clients connect to
``<ns>.sock`` (``SOCK_SEQPACKET``), say ``hello`` with their pidfd, and
register every ``attach`` and ``detach`` of a region. The supervisor keeps
its own mapping of each region it tracks (it takes no attach slot: it is not
a user) and acts on events, never on polling:

- a client's pidfd becomes readable when it has exited (crash or not): its
  slots in every tracked region are recovered (``Region.recover_slot``: a
  claim in flight becomes padding, taken mpmc records go back, a broadcast
  cursor stops gating, exclusive roles are freed), its registrations go, and
  every region left with no live process is unlinked (persistent ones aside);
- a detach that leaves a region with no holder unlinks it before the reply,
  so that when ``Channel.close()`` returns in the last user the name is gone;
- socket EOF alone is not death (a process may close the connection and live
  on): its registrations stay until its pidfd fires;
- a producer of an mpsc or mpmc region that holds one claim for longer than
  ``claim_timeout`` (stopped with SIGSTOP, stuck in a debugger or a
  deadlock) has the claim revoked, so consumers go on; it gets
  :class:`~shmring.ClaimRevoked` when it resumes. The claim's bytes stay
  quarantined until it is done with them (ring.c, "revocation"). This is the
  one periodic check (every ``claim_timeout / 4``, at most 1 s, while such
  regions are tracked): a stopped process sends no event.

A region is kept alive by (a) registrations of live clients and (b) live
processes in its attach table, judged by pid and start time (an unsupervised
process, or one between taking its slot and registering). Processes seen only
in a table get a pidfd the supervisor opens itself (then checks the start time
again, so the pidfd is known to be that process), which makes their exit an
event too.

After a restart nothing is lost: regions are mapped again from /dev/shm
("adopted"); for ``startup_grace`` seconds no table entry is judged dead
(clients re-register meanwhile, and a client in another PID namespace writes
pids that only its registration can interpret); then every adopted region is
evaluated and orphans are unlinked.

The clock is injectable (``clock=``), so timeouts are tested without waiting.
Not here: the data path. Channels never wait for the supervisor, and a dead
supervisor stops nothing but cleanup until a new one is started.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import heapq
import itertools
import json
import logging
import os
import queue
import resource
import select
import selectors
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import _core
from .. import _layout as L
from .._errors import CorruptRegion, ShmringError
from .._proc import alive as proc_alive
from .._proc import start_time as proc_start_time
from .._region import inventory as _gc
from .._region.names import (
    check_namespace,
    default_namespace,
    list_segments,
    split_segment_name,
    unlink_segment,
)
from .._region.region import Region
from . import wire as _ipc

log = logging.getLogger("shmring.supervisor")

#: Seconds a producer may hold one claim before the supervisor revokes it.
DEFAULT_CLAIM_TIMEOUT = 10.0
_MULTI_PRODUCER = ("mpsc", "mpmc")


class AlreadyRunning(ShmringError):
    """Another supervisor holds the namespace's lock."""


@dataclass(eq=False)
class _Proc:
    """A process the supervisor watches: a client, or one seen in a table."""

    key: tuple[int, int]  # (pid as we see it, or -pid if invisible; start time)
    lpid: int  # the pid the process calls itself: what its attach slots hold
    start: int
    pidfd: int
    conn: _Conn | None = None
    holds: dict[tuple[str, int], int] = field(default_factory=dict)
    seen: set[tuple[str, int]] = field(default_factory=set)  # regions it may have slots in
    creating: dict[str, float] = field(default_factory=dict)  # seg -> when announced
    dead: bool = False

    @property
    def pid(self) -> int:
        return self.key[0]


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer_pid: int
    proc: _Proc | None = None
    hello_items: list[Any] = field(default_factory=list)


@dataclass(eq=False)
class _Tracked:
    """A region the supervisor maps and watches."""

    seg: str
    created_ns: int
    region: Region
    ino: int
    persistent: bool
    holders: dict[tuple[int, int], int] = field(default_factory=dict)
    registered: bool = False  # ever held by a client (past its creation window)
    uncertain: bool = False  # last kept only for entries not judged yet (grace)

    @property
    def key(self) -> tuple[str, int]:
        return (self.seg, self.created_ns)


_LIVE: weakref.WeakSet[Supervisor] = weakref.WeakSet()


def _close_in_child() -> None:
    # A forked child must not keep the namespace lock (flock belongs to the
    # open file, which the child shares) nor the sockets of a supervisor that
    # runs in its parent.
    for sup in list(_LIVE):
        sup._forget_fds()


os.register_at_fork(after_in_child=_close_in_child)


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
    ``idle_exit``: stop after
    that many seconds with no region to track (auto-started supervisors).
    Raises :class:`AlreadyRunning` from ``start``/``run`` if another
    supervisor has the namespace.
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
    ) -> None:
        self.namespace = check_namespace(default_namespace() if namespace is None else namespace)
        self._dir = socket_dir
        self.clock = clock
        self.idle_exit = idle_exit
        self.startup_grace = startup_grace
        self.creation_grace = creation_grace
        self.claim_timeout = claim_timeout or None
        self._claims: dict[tuple[tuple[str, int], int], tuple[int, int, float]] = {}
        self._claims_timer = False
        self.paths: dict[str, str] = {}
        self._sel: selectors.EpollSelector | None = None
        self._deaths: selectors.EpollSelector | None = None
        self._draining = False
        self._lock_fd = -1
        self._listener: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._conns: dict[int, _Conn] = {}
        self._procs: dict[tuple[int, int], _Proc] = {}
        self._by_table: dict[tuple[int, int], _Proc] = {}
        self._regions: dict[tuple[str, int], _Tracked] = {}
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._grace_until = 0.0
        self._idle_since: float | None = None
        self._idle_timer = False
        self._deferred: list[tuple[_Conn, Any, _Tracked]] = []
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = \
            queue.SimpleQueue()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._opened = False
        self.stats = {"attach": 0, "detach": 0, "deaths": 0, "recovered": 0, "unlinked": 0,
                      "revoked": 0, "lifted": 0}

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
        self._sel = selectors.EpollSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        # Pidfds in an epoll of their own, nested in the main one: handling
        # every death already queued is then one epoll_wait(0).
        self._deaths = selectors.EpollSelector()
        self._sel.register(self._deaths.fileno(), selectors.EVENT_READ,
                           lambda _k: self._on_deaths())
        self._listen()
        _LIVE.add(self)
        self._opened = True
        self._grace_until = self.clock() + self.startup_grace
        self._adopt_all()
        self._schedule(self._grace_until, self._end_grace)
        self._update_idle()
        log.info("supervisor %d for namespace %r on %s", os.getpid(), self.namespace,
                 self.paths["sock"])

    def _listen(self) -> None:
        path = self.paths["sock"]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead supervisor's: we hold the lock
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        s.bind(path)
        os.chmod(path, 0o600)
        s.listen(4096)
        s.setblocking(False)
        self._listener = s
        assert self._sel is not None
        self._sel.register(s, selectors.EVENT_READ, self._on_accept)

    def run(self, *, wait: bool = False) -> None:
        """Serve until :meth:`stop` (or idle exit). ``wait``: see :meth:`open`."""
        self.open(wait=wait)
        assert self._sel is not None
        try:
            while not self._stopping:
                self._run_timers()
                if self._stopping:
                    break
                timeout = None
                if self._timers:
                    timeout = max(0.0, min(self._timers[0][0] - self.clock(), 3600.0))
                for key, _mask in self._sel.select(timeout):
                    try:
                        key.data(key)
                    except Exception:  # one bad event must not end supervision
                        log.exception("handling an event failed")
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
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"w")

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` in the supervisor's thread, after everything it has
        received so far; returns its result (tests use it to synchronise)."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the supervisor is not running in a thread")
        box: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._calls.put((fn, box))
        self.wake()
        ok, value = box.get(timeout=timeout)
        if not ok:
            raise value
        return value

    def _shutdown(self) -> None:
        if not self._opened:
            return
        self._opened = False
        _LIVE.discard(self)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.paths["sock"])  # ours: we still hold the lock
            self._listener.close()
            self._listener = None
        for c in list(self._conns.values()):
            c.sock.close()
        self._conns.clear()
        for p in self._procs.values():
            with contextlib.suppress(OSError):
                os.close(p.pidfd)
        self._procs.clear()
        self._by_table.clear()
        for t in self._regions.values():
            with contextlib.suppress(BufferError):
                t.region.close()
        self._regions.clear()
        if self._sel is not None:
            self._sel.close()
        if self._deaths is not None:
            self._deaths.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1
        log.info("supervisor %d for namespace %r stopped", os.getpid(), self.namespace)

    def _forget_fds(self) -> None:
        """In a forked child: drop every descriptor without touching what
        they refer to (the parent's supervisor goes on)."""
        fds = [self._lock_fd, self._wake_r, self._wake_w]
        if self._sel is not None and self._deaths is not None:
            fds += [self._sel.fileno(), self._deaths.fileno()]
        if self._listener is not None:
            fds.append(self._listener.detach())
        fds += [c.sock.detach() for c in self._conns.values()]
        fds += [p.pidfd for p in self._procs.values()]
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._opened = False
        self._thread = None

    # -------------------------------------------------------------- timers --
    def _schedule(self, when: float, fn: Callable[[], object]) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), fn))

    def _run_timers(self) -> None:
        while self._timers and self._timers[0][0] <= self.clock():
            _, _, fn = heapq.heappop(self._timers)
            try:
                fn()
            except Exception:
                log.exception("a timer failed")

    def _in_grace(self) -> bool:
        return self.clock() < self._grace_until

    def _end_grace(self) -> None:
        if self._in_grace():  # the clock went backwards (a test's fake one)
            self._schedule(self._grace_until, self._end_grace)
            return
        for t in list(self._regions.values()):
            self._evaluate(t)
        deferred, self._deferred = self._deferred, []
        for c, msg_id, t in deferred:
            if self._conns.get(c.sock.fileno()) is c:
                self._send(c, {"ok": True, "id": msg_id,
                               "unlinked": self._regions.get(t.key) is not t})

    def _update_idle(self) -> None:
        if self.idle_exit is None:
            return
        if self._regions or any(p.creating for p in self._procs.values()):
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
    def _on_wake(self, key: selectors.SelectorKey) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        self._run_timers()  # a moved clock is seen before the calls queued after it
        while True:
            try:
                fn, box = self._calls.get_nowait()
            except queue.Empty:
                break
            try:
                box.put((True, fn()))
            except BaseException as e:  # handed to the caller
                box.put((False, e))

    def _on_accept(self, key: selectors.SelectorKey) -> None:
        assert self._listener is not None and self._sel is not None
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
            self._sel.register(sock, selectors.EVENT_READ, self._on_message)

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
        if reply is not None and key.fd in self._conns:
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
        assert self._sel is not None
        fd = c.sock.fileno()
        self._conns.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(c.sock)
        c.sock.close()
        p = c.proc
        if p is not None and p.conn is c:
            p.conn = None
            # EOF is not death: the process may live on; its pidfd tells.
            # Exiting processes close their sockets before their pidfd
            # fires, so look once now and let the selector do the rest.
            if _pidfd_exited(p.pidfd):
                self._on_death(p)
            else:
                self._reconcile(p)

    def _reconcile(self, p: _Proc) -> None:
        """A live process closed its connection: if it ``exec``-ed (or
        unmapped a region without detaching), the regions it no longer maps
        are not its to hold, and its slots in them are garbage."""
        mapped = _mapped_inodes(p.pid) if p.pid > 0 else None
        if mapped is None:
            return  # cannot tell: keep everything until it exits
        for k in list(p.seen | set(p.holds)):
            t = self._regions.get(k)
            if t is None or t.ino in mapped:
                continue
            p.holds.pop(k, None)
            t.holders.pop(p.key, None)
            p.seen.discard(k)
            self._recover_proc(t, p)
            self._evaluate(t)

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
        if op == "creating":
            seg = str(msg["seg"])
            if self._own_segment(seg):
                p.creating[seg] = self.clock()
            return {"ok": True}
        if op == "abandon":
            p.creating.pop(str(msg["seg"]), None)
            return {"ok": True}
        if op == "attach":
            res = self._attach(p, str(msg["seg"]), int(msg["created_ns"]))
            return {"ok": res == "ok", "error": None if res == "ok" else res}
        if op == "detach":
            k = (str(msg["seg"]), int(msg["created_ns"]))
            unlinked = self._detach(p, *k)
            t = self._regions.get(k)
            if t is not None and t.uncertain:
                # Kept only for entries we may not judge yet (a restart's
                # grace): answer once we can, so that the last close still
                # returns with the name gone.
                self._deferred.append((c, msg.get("id"), t))
                return None
            return {"ok": True, "unlinked": unlinked}
        return {"ok": False, "error": "protocol", "message": f"unknown op {op!r}"}

    def _own_segment(self, seg: str) -> bool:
        parsed = split_segment_name(seg)
        return parsed is not None and parsed[0] == self.namespace

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
        if peer > 0:
            st = proc_start_time(peer)
            if st is not None and st != start:
                if pidfd >= 0:
                    os.close(pidfd)
                return {"ok": False, "error": "protocol", "message": "wrong start time"}
        if pidfd < 0:
            if peer <= 0:
                return {"ok": False, "error": "protocol", "message": "send a pidfd"}
            try:
                pidfd = os.pidfd_open(peer)
            except OSError:
                return {"ok": False, "error": "protocol", "message": "cannot watch you"}
        key = (peer if peer > 0 else -lpid, start)
        p = self._procs.get(key) or self._by_table.get((lpid, start))
        if p is not None and not p.dead:
            os.close(pidfd)
            if p.conn is not None and p.conn is not c:
                old, p.conn = p.conn, None
                self._drop_conn(old)
        else:
            p = self._watch(key, lpid, start, pidfd)
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
        want: dict[tuple[str, int], int] = {}
        for seg, cns, count in c.hello_items:
            want[(str(seg), int(cns))] = want.get((str(seg), int(cns)), 0) + int(count)
        c.hello_items = []
        results = {}
        for k, n in want.items():
            have = p.holds.get(k, 0)
            if n > have:
                res = "ok"
                for _ in range(n - have):
                    res = self._attach(p, *k)
                    if res != "ok":
                        break
                results[f"{k[0]}@{k[1]}"] = res
        for k, have in list(p.holds.items()):
            for _ in range(have - want.get(k, 0)):
                self._detach(p, *k)
        return {"ok": True, "pid": os.getpid(), "results": results}

    def _attach(self, p: _Proc, seg: str, cns: int) -> str:
        if not self._own_segment(seg):
            return "invalid"
        p.creating.pop(seg, None)
        t = self._regions.get((seg, cns))
        if t is None:
            res = self._track(seg, cns)
            if isinstance(res, str):
                return res
            t = res
        t.registered = True
        p.holds[t.key] = p.holds.get(t.key, 0) + 1
        t.holders[p.key] = t.holders.get(p.key, 0) + 1
        p.seen.add(t.key)
        self.stats["attach"] += 1
        return "ok"

    def _detach(self, p: _Proc, seg: str, cns: int) -> bool:
        k = (seg, cns)
        n = p.holds.get(k, 0)
        t = self._regions.get(k)
        if n:
            if n == 1:
                del p.holds[k]
            else:
                p.holds[k] = n - 1
            if t is not None:
                h = t.holders.get(p.key, 0) - 1
                if h > 0:
                    t.holders[p.key] = h
                else:
                    t.holders.pop(p.key, None)
        self.stats["detach"] += 1
        if t is None:
            # Not tracked (we restarted since, or it was never registered):
            # have a look, it may be the last user's detach.
            res = self._track(seg, cns)
            if isinstance(res, str):
                return False
            t = res
        return self._evaluate(t, quick=True)

    # ------------------------------------------------------------- regions --
    def _track(self, seg: str, cns: int | None) -> _Tracked | str:
        """Map ``seg`` and track it; ``gone`` if the name is missing, ``stale``
        if it now names a region created at another time than ``cns``."""
        try:
            buf, st = _gc.map_segment(seg)
        except FileNotFoundError:
            return "gone"
        except PermissionError:
            return "invalid"
        if buf is None or st.st_size < L.REGION_HEADER_SIZE or \
                _core.load(buf, L.HDR_MAGIC) != L.SHMRING_MAGIC:
            if buf is not None:
                buf.close()
            return "unpublished"
        parsed = split_segment_name(seg)
        assert parsed is not None
        region = Region(parsed[1], seg, buf, st.st_size)
        try:
            region.validate()
        except ShmringError as e:
            region.close()
            log.warning("region %s is corrupt, not tracked: %s", seg, e)
            return "invalid"
        created = region.created_ns
        if cns is not None and created != cns:
            region.close()
            return "stale"
        t = self._regions.get((seg, created))
        if t is not None:
            region.close()
            return t
        t = _Tracked(seg, created, region, st.st_ino, region.persistent)
        self._regions[t.key] = t
        self._idle_since = None
        if region.pattern in _MULTI_PRODUCER and not self._claims_timer:
            self._claims_timer = True
            self._schedule(self.clock() + self._claims_interval(), self._check_claims)
        log.debug("tracking %s", seg)
        return t

    def _untrack(self, t: _Tracked) -> None:
        self._regions.pop(t.key, None)
        for p in self._procs.values():
            p.seen.discard(t.key)
        with contextlib.suppress(BufferError):
            t.region.close()
        self._update_idle()

    def _adopt_all(self) -> None:
        """At startup: map every region of the namespace. Judgement waits for
        the end of the startup grace (clients re-register meanwhile)."""
        for ns, name in list_segments(self.namespace):
            seg = f"/shmring.{ns}.{name}"
            res = self._track(seg, None)
            if res == "unpublished":
                self._check_unpublished(seg)
        if self._regions:
            log.info("adopted %d region(s)", len(self._regions))

    def _check_unpublished(self, seg: str) -> None:
        """A segment without magic: a creation in progress, or one whose creator
        died half-way (then removed once older than the creation grace)."""
        try:
            age = time.time() - os.stat(_gc.shm_path(seg)).st_ctime
        except FileNotFoundError:
            return
        if age >= self.creation_grace:
            with contextlib.suppress(OSError, ShmringError):
                unlink_segment(seg)
                self.stats["unlinked"] += 1
                log.info("unlinked %s: its creation never completed", seg)
            return
        self._schedule(self.clock() + self.creation_grace - age + 0.05,
                       lambda: self._recheck(seg))

    def _recheck(self, seg: str) -> None:
        res = self._track(seg, None)
        if res == "unpublished":
            self._check_unpublished(seg)
        elif isinstance(res, _Tracked):
            self._evaluate(res)

    def _evaluate(self, t: _Tracked, *, quick: bool = False) -> bool:
        """Recover the slots of dead processes in ``t``'s table, then unlink
        ``t`` if nothing keeps it alive (unless persistent); stop tracking it
        once nobody uses it. True if unlinked. ``quick``: skip all that while
        a registered holder remains (dead ones come as their own events)."""
        if self._regions.get(t.key) is not t:
            return False
        # Deaths already queued count: the last close must see the name go.
        self._on_deaths()
        if self._regions.get(t.key) is not t:
            return False  # unlinked while handling them
        if quick and t.holders:
            return False
        buf = t.region._mapping()
        in_grace = self._in_grace()
        live = slotted = uncertain = False
        mapped: dict[int, dict[int, int] | None] = {}

        def maps(pid: int) -> bool:
            if pid not in mapped:
                mapped[pid] = _mapped_inodes(pid)
            inodes = mapped[pid]
            return inodes is None or t.ino in inodes

        entries: Iterable[tuple[int, int, int]]
        try:
            entries = t.region.table.entries()
        except CorruptRegion:
            # A header overwritten after creation: its table cannot be
            # trusted, so only registered holders keep the region alive.
            entries = ()
        for i, pid, start in entries:
            slotted = True
            p = self._by_table.get((pid, start))
            if p is None and not in_grace and self._watch_table_process(pid, start, t):
                p = self._by_table.get((pid, start))
            if p is not None and not p.dead:
                # Alive. A slot is still garbage if its process no longer maps
                # the region (an endpoint dropped without close(), an exec):
                # it cannot touch the ring, so recovering it is safe.
                if t.key in p.holds or p.pid <= 0 or maps(p.pid):
                    p.seen.add(t.key)
                    live = True
                    continue
            elif in_grace:
                uncertain = True
                continue
            try:
                recovered = t.region.recover_slot(i, pid)
            except CorruptRegion as e:
                # The ring cannot be repaired; the slot still goes.
                log.warning("slot %d of %s: %s", i, t.seg, e)
                t.region.free_slot(i)
                recovered = True
            if recovered:
                self.stats["recovered"] += 1
                log.info("recovered slot %d of %s (pid %d: %s)", i, t.seg, pid,
                         "dead" if p is None else "does not map it")
        t.uncertain = uncertain and not live and not t.holders
        if live or t.holders or uncertain:
            return False
        if not t.registered and not t.persistent and not slotted:
            # Maybe between its creation and its creator's first slot.
            creator = int.from_bytes(bytes(buf[L.HDR_CREATOR_PID:L.HDR_CREATOR_PID + 8]),
                                     "little")
            age = time.time() - t.created_ns / 1e9
            if age < self.creation_grace and os.path.exists(f"/proc/{creator}"):
                self._schedule(self.clock() + self.creation_grace - age + 0.05,
                               lambda: self._evaluate(t))
                return False
        unlinked = False
        if not t.persistent:
            unlinked = _gc.unlink_if_same(t.seg, t.ino)
            if unlinked:
                self.stats["unlinked"] += 1
                log.info("unlinked %s: no process uses it", t.seg)
        self._untrack(t)
        return unlinked

    # ----------------------------------------------------------- processes --
    def _watch(self, key: tuple[int, int], lpid: int, start: int, pidfd: int) -> _Proc:
        assert self._deaths is not None
        p = _Proc(key, lpid, start, pidfd)
        self._procs[key] = p
        self._by_table[(lpid, start)] = p
        self._deaths.register(pidfd, selectors.EVENT_READ, p)
        return p

    def _on_deaths(self) -> None:
        if self._draining or self._deaths is None:
            return
        self._draining = True
        try:
            while events := self._deaths.select(0):
                for key, _mask in events:
                    if key.data.dead:  # never twice
                        self._deaths.unregister(key.fd)
                    self._on_death(key.data)
        finally:
            self._draining = False

    def _watch_table_process(self, pid: int, start: int, t: _Tracked) -> bool:
        """A live process in ``t``'s table that has not registered: watch it.
        False if it is dead (or not ours to see)."""
        if not proc_alive(pid, start):
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        # The pidfd names whoever has the pid now: check it is still the
        # process that took the slot.
        if proc_start_time(pid) != start:
            os.close(pidfd)
            return False
        p = self._watch((pid, start), pid, start, pidfd)
        p.seen.add(t.key)
        return True

    def _on_death(self, p: _Proc) -> None:
        if p.dead:
            return
        p.dead = True
        assert self._deaths is not None
        self.stats["deaths"] += 1
        with contextlib.suppress(KeyError, ValueError):
            self._deaths.unregister(p.pidfd)
        os.close(p.pidfd)
        self._procs.pop(p.key, None)
        if self._by_table.get((p.lpid, p.start)) is p:
            del self._by_table[(p.lpid, p.start)]
        if p.conn is not None:
            c, p.conn = p.conn, None
            self._drop_conn(c)
        touched = set(p.seen) | set(p.holds)
        for k in p.holds:
            t = self._regions.get(k)
            if t is not None:
                t.holders.pop(p.key, None)
        p.holds.clear()
        for k in touched:
            t = self._regions.get(k)
            if t is not None:
                self._recover_proc(t, p)
        for k in touched:
            t = self._regions.get(k)
            if t is not None:
                self._evaluate(t)
        for seg in p.creating:
            self._recheck(seg)
        p.creating.clear()
        self._update_idle()

    def _recover_proc(self, t: _Tracked, p: _Proc) -> None:
        for i in t.region.table.slots_of(p.lpid, p.start):
            try:
                if t.region.recover_slot(i, p.lpid):
                    self.stats["recovered"] += 1
                    log.info("recovered slot %d of %s (pid %d exited)", i, t.seg, p.pid)
            except ShmringError as e:
                log.warning("cannot recover slot %d of %s: %s", i, t.seg, e)

    # ------------------------------------------------------- stuck claims --
    def _claims_interval(self) -> float:
        return min(1.0, self.claim_timeout / 4) if self.claim_timeout else 1.0

    def _check_claims(self) -> None:
        """Revoke claims held past ``claim_timeout``; lift quarantines that
        are done with. Runs while a multi-producer region is tracked."""
        self._claims_timer = False
        now = self.clock()
        seen: set[tuple[tuple[str, int], int]] = set()
        tracked = False
        for t in list(self._regions.values()):
            try:
                if t.region.pattern not in _MULTI_PRODUCER:
                    continue
                tracked = True
                self._check_region_claims(t, now, seen)
            except (ShmringError, ValueError) as e:  # ValueError: unmapped meanwhile
                log.warning("cannot check the claims of %s: %s", t.seg, e)
        for k in [k for k in self._claims if k not in seen]:
            del self._claims[k]
        if tracked and not self._stopping:
            self._claims_timer = True
            self._schedule(self.clock() + self._claims_interval(), self._check_claims)

    def _check_region_claims(self, t: _Tracked, now: float,
                             seen: set[tuple[tuple[str, int], int]]) -> None:
        buf = t.region._mapping()
        if _core.load(buf, L.OFF_QUAR_COUNT):
            lifted = _core.lift_quarantine(buf)
            if lifted:
                self.stats["lifted"] += lifted
                log.info("%s: %d revoked claim(s) done with, bytes back in use", t.seg, lifted)
        if self.claim_timeout is None:
            return
        for i, pid, pos in t.region.table.producer_claims():
            k = (t.key, i)
            seen.add(k)
            prev = self._claims.get(k)
            if prev is None or prev[:2] != (pid, pos):
                self._claims[k] = (pid, pos, now)
                continue
            if now - prev[2] < self.claim_timeout:
                continue
            rc = _core.revoke_claim(buf, i)
            if rc == 1:
                self.stats["revoked"] += 1
                self._claims[k] = (pid, pos, float("inf"))
                log.warning("%s: pid %d held a claim for %.1f s (stopped or stuck): "
                            "revoked it so consumers go on", t.seg, pid, now - prev[2])
            elif rc == -2:
                log.warning("%s: pid %d holds a claim too long, but %d revoked claims "
                            "are still quarantined: not revoking yet", t.seg, pid,
                            L.QUAR_ENTRIES)

    # -------------------------------------------------------------- status --
    def status(self, limit: int | None = None) -> dict[str, Any]:
        """What the supervisor knows (JSON-ready). With ``limit``, the lists
        of regions and processes are cut (``truncated``) to fit that many
        bytes of JSON; the counts are always whole."""
        st = self._status()
        st["counts"] = {"regions": len(st["regions"]), "processes": len(st["processes"]),
                        "connections": len(self._conns)}
        st["truncated"] = False
        while limit is not None and len(json.dumps(st)) > limit:
            st["truncated"] = True
            longest = max(("processes", "regions"), key=lambda k: len(st[k]))
            if not st[longest]:
                break
            del st[longest][len(st[longest]) // 2:]
        return st

    def _status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "namespace": self.namespace,
            "in_grace": self._in_grace(),
            "stats": dict(self.stats),
            "regions": [
                {"segment": t.seg, "created_ns": t.created_ns, "persistent": t.persistent,
                 "holders": [{"pid": k[0], "start_time": k[1], "count": n}
                             for k, n in t.holders.items()]}
                for t in self._regions.values()
            ],
            "processes": [
                {"pid": p.pid, "lpid": p.lpid, "start_time": p.start,
                 "connected": p.conn is not None,
                 "holds": [{"segment": k[0], "created_ns": k[1], "count": n}
                           for k, n in p.holds.items()]}
                for p in self._procs.values()
            ],
        }


def _pidfd_exited(pidfd: int) -> bool:
    return bool(_exited([pidfd]))


def _exited(pidfds: list[int]) -> set[int]:
    """Which of ``pidfds`` name processes that have exited (without waiting)."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(0)}


def _mapped_inodes(pid: int) -> dict[int, int] | None:
    """How many mappings process ``pid`` has of each /dev/shm file, by inode,
    not counting this supervisor's own (an embedded supervisor shares its
    process with a client). None if unreadable."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            data = f.read()
    except OSError:
        return None
    out: dict[int, int] = {}
    for line in data.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and b"/dev/shm/" in parts[5]:
            ino = int(parts[4])
            out[ino] = out.get(ino, 0) + 1
    if pid == os.getpid():
        for sup in list(_LIVE):
            for t in sup._regions.values():
                if out.get(t.ino):
                    out[t.ino] -= 1
    return {ino: n for ino, n in out.items() if n > 0}


# ------------------------------------------------------------------- command --
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring supervisor``."""
    p.add_argument("--namespace", "-n", help="namespace to supervise (default: "
                   "$SHMRING_NAMESPACE or 'default')")
    p.add_argument("--socket-dir", help="directory of the socket (default: "
                   "$SHMRING_SOCKET_DIR, $XDG_RUNTIME_DIR/shmring or /tmp/shmring-<uid>)")
    p.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                   help="exit after this long with no region to watch (auto-start)")
    p.add_argument("--startup-grace", type=float, default=1.0, metavar="SECONDS",
                   help="after a restart, wait this long for clients to re-register "
                   "before judging table entries dead (default 1)")
    p.add_argument("--claim-timeout", type=float, metavar="SECONDS",
                   default=float(os.environ.get("SHMRING_CLAIM_TIMEOUT", DEFAULT_CLAIM_TIMEOUT)),
                   help="revoke a producer's claim held longer than this (stopped or "
                   "stuck), so consumers go on; 0 never (default $SHMRING_CLAIM_TIMEOUT "
                   f"or {DEFAULT_CLAIM_TIMEOUT:g})")
    p.add_argument("--daemonize", action="store_true",
                   help="fork into the background (log to <socket-dir>/<ns>.log)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.add_argument("--log-file", help="log here instead of stderr")


def main(args: argparse.Namespace) -> int:
    """``shmring supervisor``: serve in the foreground until SIGTERM/SIGINT."""
    if args.daemonize and os.fork():
        os._exit(0)  # the launcher returns at once; the daemon is init's child
    ns = check_namespace(args.namespace or default_namespace())
    log_file = args.log_file
    if log_file is None and args.daemonize:
        log_file = _ipc.paths(ns, args.socket_dir)["log"]
        with contextlib.suppress(OSError):
            if os.path.getsize(log_file) > 1 << 20:
                os.truncate(log_file, 0)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        filename=log_file,
    )
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a pidfd and a socket per client
    sup = Supervisor(ns, socket_dir=args.socket_dir, idle_exit=args.exit_when_idle,
                     startup_grace=args.startup_grace, claim_timeout=args.claim_timeout)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        sup.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        # Run by hand or by systemd, take over from an auto-started one when
        # it exits; auto-started ones simply give way.
        sup.run(wait=args.exit_when_idle is None)
    except AlreadyRunning as e:
        log.info("%s: nothing to do", e)
    return 0
