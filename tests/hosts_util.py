"""Two "hosts" on one machine, for the tests of what crosses machines (the
bridge, issue 17): :func:`two_hosts` (or the ``hosts`` fixture) yields a
:class:`Pair` of :class:`Host` ``a`` and ``b`` joined by a veth pair.

What a host is. Each host is one long-lived *holder* process started with
``unshare --net --mount --uts --propagation private``, so it has

- its own network namespace: loopback up and one veth end, ``eth0``, with a
  test-only address (``10.201.x.1/30`` on a, ``.2/30`` on b); the veth pair
  is created straight into the two namespaces (``ip link add eth0 type veth
  peer name eth0 netns <pid>``), so it never appears in the machine's own
  namespace and its name cannot clash with another test's;
- its own mount namespace (private propagation: nothing mounted there is
  seen by the machine, nothing the machine mounts later reaches it), where
  the holder mounts a private tmpfs over ``/dev/shm``, another one over the
  pair's ``run`` directory (the host's runtime directory, see below), sysfs
  for its own network namespace (``/sys/class/net``), and the pair's hosts
  file over ``/etc/hosts`` (``hosta`` and ``hostb`` resolve to the two
  addresses on both hosts);
- its own hostname (UTS namespace): ``hosta`` / ``hostb``.

Every process run on a host (:meth:`Host.popen`, :meth:`Host.run`,
:meth:`Host.python`) enters the holder's network, mount and UTS namespaces
with ``nsenter --target <holder> --net --mount --uts`` (which execs the
program: ``Popen.pid`` is the program itself, so a test can SIGKILL,
SIGSTOP and SIGCONT it). All of a host's processes therefore share one mount
namespace, hence one ``/dev/shm``, by construction: there is no per-process
bind mount to get wrong. A process on ``a`` sees neither ``b``'s segments
nor the machine's real ``/dev/shm``.

Why a holder rather than ``ip netns add``: nothing is registered on the
machine (no ``/run/netns`` entry, no mount in the machine's table, no veth
in its namespace), so nothing can be left behind there; the kernel frees a
host's namespaces, tmpfs mounts and veth end when its last process goes.
The holder waits for EOF on its stdin, a pipe from the test process: if the
test process dies without tearing down, the holder SIGKILLs every process in
its network namespace and exits, and the host disappears.

Runtime directory. On both hosts the same path, ``<pair dir>/run``, holds a
different private tmpfs; host processes get ``SHMRING_SOCKET_DIR=<run>/shmring``,
``XDG_RUNTIME_DIR=<run>``, ``HOME=<run>/home`` and ``TMPDIR=<run>/tmp`` (the
supervisor finds its socket directory from the first two, see
``shmring._supervisor.wire.socket_dir``; the XDG config/data/state/cache
variables are removed so that they derive from ``HOME``). So each host
auto-starts its own supervisor, with its own instance guard in its own
``/dev/shm``. The test process reads a host's files through the holder's
root: :meth:`Host.path` (``/proc/<holder>/root/...``).

Teardown (the context manager's exit, whatever the test did): every
process in each host's network namespace is SIGKILLed, again until none is
left (daemons such as an auto-started supervisor included), the holders are
told to exit, and the pair's directory is removed; then the harness checks
that no process is left in either namespace. The machine's ``/dev/shm`` is
never touched. Names are unique per test process and pair (pid and a
counter) and nothing is shared between pairs, so xdist workers run pairs in
parallel freely.

Needs root, ``unshare`` and ``nsenter`` (Debian: util-linux) and ``ip``
(iproute2).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hosts_holder import kill_netns, netns_of, pids_in

import shmring

TESTS = os.path.dirname(os.path.abspath(__file__))
#: The holder program (one process per host).
HOLDER = os.path.join(TESTS, "hosts_holder.py")
#: The directory holding the ``shmring`` package (``src``), put on the hosts'
#: PYTHONPATH so that every host process imports the code under test: the
#: shmring this process imported (a source tree built in place, or the
#: installed package: src/ of a checkout has no extension in it then).
SRC = os.path.dirname(os.path.dirname(os.path.abspath(shmring.__file__)))
#: ``shmring``'s command line, to put in front of its arguments.
SHMRING = [sys.executable, "-m", "shmring"]
#: The veth end's name on each host.
IFACE = "eth0"
#: Seconds a host command may take unless told otherwise.
TIMEOUT = 30.0
#: Environment variables removed on the hosts (so they derive from HOME).
_DROPPED = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME")

_pairs = itertools.count()

# The holder's set-up, run by ``sh -c`` inside the new namespaces: $1 is the
# runtime directory, $2 the hosts file, then the holder's argv.
_SETUP = """set -e
mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev run "$1"
mkdir -m 0700 "$1/shmring" "$1/home"
mkdir -m 1777 "$1/tmp"
mount -t sysfs sysfs /sys
mount --bind "$2" /etc/hosts
ip link set lo up
shift 2
exec "$@"
"""


class HostsError(AssertionError):
    """The harness could not build, run on or tear down a host."""


def wait_for(what: str, cond: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Poll ``cond()`` until it returns something true (that value);
    HostsError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise HostsError(f"{what}: not within {timeout:g} s")
        time.sleep(0.01)
    return got


@dataclass
class Host:
    """One host: its holder process, address and environment (see the module
    docstring). Made by :func:`two_hosts`."""

    hostname: str
    address: str
    runtime_dir: str
    holder: subprocess.Popen[bytes]
    netns: str = ""
    env: dict[str, str] = field(default_factory=dict, repr=False)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int:
        """The holder's pid (its namespaces are the host's)."""
        return self.holder.pid

    def wrap(self, argv: Sequence[str], *, cwd: str | None = None, mount: bool = True) -> list[str]:
        """``argv`` as a command that runs it on this host (in ``cwd``, by
        default the test process's working directory); ``mount=False``
        enters the network namespace only (the machine's files)."""
        ns = ["--net", "--uts", *(["--mount", f"--wd={cwd or os.getcwd()}"] if mount else [])]
        return ["nsenter", f"--target={self.pid}", *ns, "--", *argv]

    def environment(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The host's environment with ``env`` added."""
        return {**self.env, **(env or {})}

    def popen(self, argv: Sequence[str], env: dict[str, str] | None = None,
              **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` on this host (its own session, the host's
        environment plus ``env``; ``kw`` goes to Popen). It is killed at
        teardown, or by :meth:`kill_all`."""
        kw.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen(
            self.wrap(argv, cwd=kw.pop("cwd", None)), env=self.environment(env), **kw)
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = TIMEOUT, *,
            env: dict[str, str] | None = None, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on this host to its end, output captured as text; a
        program still running after ``timeout`` seconds is killed and
        HostsError raised; ``check``: HostsError unless it exits 0."""
        proc = self.popen(argv, env, stdin=subprocess.PIPE if input is not None else
                          subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise HostsError(f"{self.hostname}: {list(argv)} still running after {timeout:g} s;"
                             f" stdout {out!r}, stderr {err!r}") from None
        finally:
            self.procs.remove(proc)
        done = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check and done.returncode != 0:
            raise HostsError(f"{self.hostname}: {list(argv)} exited {done.returncode}; "
                             f"stdout {out!r}, stderr {err!r}")
        return done

    def python(self, code: str, *args: str, timeout: float = TIMEOUT,
               env: dict[str, str] | None = None, input: str | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code args...`` on this host (shmring and the test
        helpers importable) to its end; see :meth:`run` (here ``check`` is on
        by default)."""
        return self.run([sys.executable, "-c", code, *args], timeout, env=env, input=input,
                        check=check)

    def python_popen(self, code: str, *args: str, env: dict[str, str] | None = None,
                     **kw: Any) -> subprocess.Popen[Any]:
        """Start ``python -c code args...`` on this host; see :meth:`popen`."""
        return self.popen([sys.executable, "-c", code, *args], env, **kw)

    def shmring(self, *args: str, timeout: float = TIMEOUT,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``shmring args...`` on this host to its end."""
        return self.run([*SHMRING, *args], timeout, check=check)

    def ip(self, *args: str) -> str:
        """Run ``ip args...`` in this host's network namespace; its output."""
        done = subprocess.run(self.wrap(["ip", *args], mount=False), capture_output=True,
                              text=True, timeout=TIMEOUT, check=False)
        if done.returncode != 0:
            raise HostsError(f"{self.hostname}: ip {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def path(self, p: str) -> str:
        """Where the test process finds this host's file ``p`` (an absolute
        path as the host's processes see it)."""
        return f"/proc/{self.pid}/root{p}"

    def shm_names(self) -> list[str]:
        """What is in this host's /dev/shm, sorted."""
        return sorted(os.listdir(self.path("/dev/shm")))

    def pids(self) -> list[int]:
        """The processes running on this host (in its network namespace),
        the holder aside."""
        return pids_in(self.netns, exclude=(self.pid,))

    def listeners(self) -> set[tuple[str, int]]:
        """The (address, port) of every listening TCP socket on this host
        (``0.0.0.0`` / ``::`` for any address), from its ``/proc/net/tcp*``."""
        found = set()
        for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
            try:
                with open(f"/proc/{self.pid}/net/{table}") as f:
                    rows = f.read().splitlines()[1:]
            except FileNotFoundError:
                continue
            for row in rows:
                cols = row.split()
                if cols[3] != "0A":  # TCP_LISTEN
                    continue
                addr, port = cols[1].rsplit(":", 1)
                raw = bytes.fromhex(addr)  # 32-bit words in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((socket.inet_ntop(family, raw), int(port, 16)))
        return found

    def listening(self, port: int, address: str | None = None) -> bool:
        """Whether a TCP socket on this host listens on ``port`` (on
        ``address`` if given)."""
        return any(p == port and address in (None, a) for a, p in self.listeners())

    def operstate(self) -> str:
        """The veth end's operational state (``up``, ``down``,
        ``lowerlayerdown``...)."""
        with open(self.path(f"/sys/class/net/{IFACE}/operstate")) as f:
            return f.read().strip()

    def kill_all(self) -> None:
        """SIGKILL every process on this host (those it started itself too,
        such as a daemonized supervisor) and reap the ones started here: the
        host as after a crash, but its /dev/shm and runtime directory kept."""
        try:
            kill_netns(self.netns, exclude=(self.pid,))
        except RuntimeError as e:
            raise HostsError(f"{self.hostname}: {e}") from None
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(TIMEOUT)
        self.procs.clear()


@dataclass
class Pair:
    """Hosts ``a`` and ``b`` and the veth link between them."""

    a: Host
    b: Host
    directory: str

    @property
    def both(self) -> tuple[Host, Host]:
        """(a, b); the pair also unpacks as ``a, b = pair``."""
        return (self.a, self.b)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.both)

    def peer(self, host: Host) -> Host:
        """The other host."""
        return self.b if host is self.a else self.a

    def link_down(self, *ends: Host) -> None:
        """``ip link set eth0 down`` on ``ends`` (default both): the cable
        is cut, packets between the hosts are dropped (sockets stay open)."""
        for h in ends or self.both:
            h.ip("link", "set", IFACE, "down")
        wait_for("the link down", lambda: all(h.operstate() != "up" for h in self.both), 10)

    def link_up(self, *ends: Host) -> None:
        """``ip link set eth0 up`` on ``ends`` (default both); returns once
        both ends are up again."""
        for h in ends or self.both:
            h.ip("link", "set", IFACE, "up")
        wait_for("the link up", lambda: all(h.operstate() == "up" for h in self.both), 10)

    def wait_port(self, host: Host, port: int, address: str | None = None,
                  timeout: float = TIMEOUT) -> None:
        """Return once a TCP socket on ``host`` listens on ``port`` (on
        ``address`` if given: ``0.0.0.0`` for any, ``127.0.0.1``...)."""
        wait_for(f"a listener on {host.hostname}:{port}",
                 lambda: host.listening(port, address), timeout)

    def url(self, host: Host, port: int) -> str:
        """``tcp://<host's address>:<port>``."""
        return f"tcp://{host.address}:{port}"


def _addresses(index: int) -> tuple[str, str]:
    """The two addresses of pair ``index``: a /30 in 10.201.0.0/16 (the
    namespaces keep pairs apart anyway; distinct ones read better in logs)."""
    n = index % (1 << 14)
    base = f"10.201.{n >> 6}.{(n & 63) * 4}"
    prefix, last = base.rsplit(".", 1)
    return f"{prefix}.{int(last) + 1}", f"{prefix}.{int(last) + 2}"


def _readline(f: Any, timeout: float) -> bytes:
    r, _, _ = select.select([f], [], [], timeout)
    return f.readline() if r else b""


def _start_holder(hostname: str, run: str, hosts_file: str) -> subprocess.Popen[bytes]:
    argv = ["unshare", "--net", "--mount", "--uts", "--propagation", "private", "--",
            "sh", "-c", _SETUP, "holder", run, hosts_file,
            sys.executable, HOLDER, hostname]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    line = _readline(proc.stdout, TIMEOUT)
    if line.strip() != b"ready":
        proc.kill()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.wait()
        raise HostsError(f"cannot make host {hostname} ({' '.join(argv[:6])} ...): "
                         f"{err or line!r} (needs root, util-linux and iproute2)")
    return proc


def _stop_holder(host: Host) -> None:
    proc = host.holder
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
    try:
        proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(TIMEOUT)


def _host_env(run: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    path = env.get("PYTHONPATH")
    env.update(SHMRING_SOCKET_DIR=f"{run}/shmring", XDG_RUNTIME_DIR=run, HOME=f"{run}/home",
               TMPDIR=f"{run}/tmp", PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([SRC, TESTS, *([path] if path else [])]))
    return env


@contextlib.contextmanager
def two_hosts() -> Iterator[Pair]:
    """Hosts ``a`` (``hosta``) and ``b`` (``hostb``) joined by a veth pair,
    both torn down at the end, whatever happened (see the module docstring)."""
    if shutil.which("nsenter") is None or shutil.which("unshare") is None:
        raise HostsError("two_hosts needs unshare and nsenter (Debian package util-linux)")
    if shutil.which("ip") is None:
        raise HostsError("two_hosts needs ip (Debian package iproute2)")
    index = next(_pairs)
    directory = tempfile.mkdtemp(prefix=f"shmring-hosts-{os.getpid()}-{index}-")
    run = os.path.join(directory, "run")
    os.mkdir(run)
    hosts_file = os.path.join(directory, "hosts")
    made: list[Host] = []
    try:
        addresses = _addresses(os.getpid() * 64 + index)
        with open(hosts_file, "w") as f:
            f.write(f"127.0.0.1 localhost\n::1 localhost\n"
                    f"{addresses[0]} hosta\n{addresses[1]} hostb\n")
        for name, address in zip(("hosta", "hostb"), addresses, strict=True):
            holder = _start_holder(name, run, hosts_file)
            host = Host(name, address, run, holder, env=_host_env(run))
            made.append(host)
            netns = netns_of(holder.pid)
            if netns is None:
                raise HostsError(f"host {name}'s holder is gone")
            host.netns = netns
        a, b = made
        a.ip("link", "add", IFACE, "type", "veth", "peer", "name", IFACE, "netns", str(b.pid))
        for h in made:
            h.ip("addr", "add", f"{h.address}/30", "dev", IFACE)
            h.ip("link", "set", IFACE, "up")
        pair = Pair(a, b, directory)
        wait_for("the link up", lambda: all(h.operstate() == "up" for h in made), 10)
        yield pair
    finally:
        _teardown(made, directory)


def _teardown(made: list[Host], directory: str) -> None:
    try:
        for h in made:
            if h.netns:
                h.kill_all()
    finally:
        for h in made:
            _stop_holder(h)
        left = {h.hostname: pids_in(h.netns) for h in made if h.netns}
        # The run directory is a mount point in the hosts' namespaces only,
        # gone with them: here it is an empty directory.
        shutil.rmtree(directory, ignore_errors=True)
    if any(left.values()):
        raise HostsError(f"processes outlived their hosts: {left}")


@pytest.fixture(name="hosts")
def hosts_fixture() -> Iterator[Pair]:
    """The ``hosts`` fixture: two hosts for one test (:func:`two_hosts`). A
    test module gets it with ``from hosts_util import hosts_fixture  # noqa:
    F401`` (or every module, once conftest lists ``hosts_util`` in its
    ``pytest_plugins``)."""
    with two_hosts() as pair:
        yield pair
