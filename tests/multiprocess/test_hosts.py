"""The two-hosts harness (``hosts_util``) itself, with real namespaces, real
processes and real TCP: each host's /dev/shm and supervisor are its own, the
processes of one host share its channels, TCP crosses the veth pair and stops
while the link is down, and nothing outlives the pair (not even when the
test fails, or when the test process dies without tearing down)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from typing import IO, Any

import pytest
from hosts_holder import netns_of, pids_in
from hosts_util import TIMEOUT, Host, Pair, hosts_fixture, two_hosts, wait_for  # noqa: F401

pytestmark = pytest.mark.timeout(120)

#: Creates (or opens) channel argv[1], says "ready", keeps it open until EOF on stdin.
HOLD = """
import sys, shmring
name, create = sys.argv[1], sys.argv[2] == "create"
ch = shmring.Channel.create(name, capacity=4096, pattern="spsc") if create else \\
    shmring.Channel.open(name)
print("ready", ch.region.segment, flush=True)
sys.stdin.read()
ch.close()
if create:
    ch.unlink()
"""

#: Tries to open channel argv[1]: prints the error's type, or "opened".
TRY_OPEN = """
import sys, shmring
try:
    shmring.Channel.open(sys.argv[1]).close()
    print("opened")
except shmring.ShmringError as e:
    print(type(e).__name__)
"""

CONSUMER = """
import sys, shmring
n = int(sys.argv[2])
ch = shmring.Channel.create(sys.argv[1], capacity=4096, pattern="spsc")
with ch.consumer() as c:
    print("ready", flush=True)
    got = [c.recv(timeout=30) for _ in range(n)]
ch.close()
ch.unlink()
assert got == [b"m%d" % i for i in range(n)], got[:5]
print("received", len(got))
"""

PRODUCER = """
import sys, shmring
ch = shmring.Channel.open(sys.argv[1], wait=30)
with ch.producer() as p:
    for i in range(int(sys.argv[2])):
        p.send(b"m%d" % i, timeout=30)
ch.close()
print("sent")
"""

PORT = 7470

#: A TCP line echo server on argv[1]:PORT (any number of connections).
ECHO = f"""
import socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
with socketserver.ThreadingTCPServer((sys.argv[1], {PORT}), Echo) as s:
    s.serve_forever()
"""

#: A TCP client driven by stdin, one answer a line: ``connect ID HOST``,
#: ``send ID TEXT``, ``recv ID TIMEOUT`` (one line): ``ok [...]`` or
#: ``error <exception type>``.
CLIENT = f"""
import socket, sys
conns, bufs = {{}}, {{}}
for line in sys.stdin:
    cmd, cid, arg = line.split()
    try:
        if cmd == "connect":
            conns[cid] = socket.create_connection((arg, {PORT}), timeout=3)
            bufs[cid] = b""
            out = "ok"
        elif cmd == "send":
            conns[cid].sendall(arg.encode() + b"\\n")
            out = "ok"
        else:
            conns[cid].settimeout(float(arg))
            while b"\\n" not in bufs[cid]:
                chunk = conns[cid].recv(4096)
                if not chunk:
                    raise EOFError
                bufs[cid] += chunk
            got, _, bufs[cid] = bufs[cid].partition(b"\\n")
            out = "ok " + got.decode()
    except (OSError, EOFError) as e:
        out = "error " + type(e).__name__
    print(out, flush=True)
"""


def _line(f: IO[Any] | None) -> str:
    assert f is not None
    line = f.readline()
    assert line, "the program said nothing and exited"
    return str(line).strip()


def _holding(host: Host, name: str, create: bool = True) -> tuple[subprocess.Popen[Any], str]:
    """A process on ``host`` holding channel ``name`` open; (it, segment)."""
    proc = host.python_popen(HOLD, name, "create" if create else "open",
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    word, segment = _line(proc.stdout).split()
    assert word == "ready"
    return proc, segment


def _release(proc: subprocess.Popen[Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(TIMEOUT) == 0


def test_channel_on_a_is_not_on_b(hosts: Pair, uname: str) -> None:
    """A channel created on a: in a's /dev/shm, not in b's nor in the
    machine's; opening it on b (or here) is RegionNotFound; and a second
    process on a opens it."""
    a, b = hosts
    proc, segment = _holding(a, uname)
    seg = segment.lstrip("/")
    assert seg in a.shm_names()
    assert seg not in b.shm_names()
    assert not os.path.exists("/dev/shm/" + seg)
    assert b.python(TRY_OPEN, uname).stdout.strip() == "RegionNotFound"
    assert a.python(TRY_OPEN, uname).stdout.strip() == "opened"
    import shmring
    with pytest.raises(shmring.RegionNotFound):
        shmring.Channel.open(uname)
    _release(proc)
    assert seg not in a.shm_names()


def test_processes_on_one_host_share_channels(hosts: Pair, uname: str) -> None:
    """A consumer process and a producer process on a: 2000 messages pass,
    in order."""
    a, b = hosts
    n = "2000"
    consumer = a.python_popen(CONSUMER, uname, n, stdout=subprocess.PIPE, text=True)
    assert _line(consumer.stdout) == "ready"
    assert a.python(PRODUCER, uname, n).stdout.strip() == "sent"
    assert _line(consumer.stdout) == "received 2000"
    assert consumer.wait(TIMEOUT) == 0
    assert not [e for e in b.shm_names() if uname in e]


def _supervisor(host: Host) -> dict[str, Any]:
    code = ("import json, os; from shmring._supervisor import instance; "
            "h = instance.holder(os.environ['SHMRING_NAMESPACE']); "
            "print(json.dumps(None if h is None else {'pid': h.pid, 'socket': h.socket}))")
    found = json.loads(host.python(code).stdout)
    assert found is not None, f"no supervisor on {host.hostname}"
    assert isinstance(found, dict)
    return found


def test_each_host_has_its_own_supervisor(hosts: Pair, uname: str) -> None:
    """A channel on each host: each host's ``shmring ls`` shows its own only;
    each host auto-started a supervisor of its own, running on that host,
    whose socket (the same path on both) is in that host's runtime directory
    only; killing everything on a leaves b's supervisor running."""
    a, b = hosts
    held = {h.hostname: _holding(h, f"{uname}-{h.hostname}") for h in hosts}
    for h in hosts:
        listed = json.loads(h.shmring("ls", "--json").stdout)
        assert [r["name"] for r in listed] == [f"{uname}-{h.hostname}"]
    sa, sb = _supervisor(a), _supervisor(b)
    assert sa["pid"] != sb["pid"]
    assert sa["pid"] in a.pids() and sa["pid"] not in b.pids()
    assert sb["pid"] in b.pids() and sb["pid"] not in a.pids()
    assert sa["socket"] == sb["socket"]
    assert sa["socket"].startswith(a.runtime_dir + "/")
    assert os.path.exists(a.path(sa["socket"])) and os.path.exists(b.path(sb["socket"]))
    assert not os.path.exists(sa["socket"])  # not on the machine
    a.kill_all()
    assert a.pids() == []
    assert sb["pid"] in b.pids()
    _release(held["hostb"][0])


def _ask(client: subprocess.Popen[Any], line: str) -> str:
    assert client.stdin is not None
    client.stdin.write(line + "\n")
    client.stdin.flush()
    return _line(client.stdout)


@pytest.mark.parametrize("cut", ["both", "b"], ids=["both-ends-down", "b-end-down"])
def test_tcp_between_hosts_follows_the_link(hosts: Pair, cut: str) -> None:
    """An echo server on b, a client on a (by name, ``hostb``): lines echo;
    with the link down an open connection's line gets no answer and a new
    connection fails; once it is up again a new connection echoes at once
    and the open one delivers its late line, then the next, in order."""
    a, b = hosts
    b.python_popen(ECHO, "0.0.0.0")
    hosts.wait_port(b, PORT, "0.0.0.0")
    assert not a.listening(PORT)
    client = a.python_popen(CLIENT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert _ask(client, "connect 1 hostb") == "ok"
    assert _ask(client, "send 1 one") == "ok"
    assert _ask(client, "recv 1 5") == "ok one"
    hosts.link_down(*([b] if cut == "b" else []))
    assert _ask(client, "send 1 two") == "ok"
    assert _ask(client, "recv 1 1") == "error TimeoutError"
    assert _ask(client, "connect 2 hostb").startswith("error ")
    hosts.link_up()
    assert _ask(client, f"connect 3 {b.address}") == "ok"
    assert _ask(client, "send 3 three") == "ok"
    assert _ask(client, "recv 3 5") == "ok three"
    assert _ask(client, "recv 1 20") == "ok two"  # TCP retransmitted it
    assert _ask(client, "send 1 four") == "ok"
    assert _ask(client, "recv 1 5") == "ok four"


def test_loopback_is_each_hosts_own(hosts: Pair) -> None:
    """An echo server on b's loopback only: b's listeners say so; from a,
    neither 127.0.0.1 (a's own loopback) nor hostb reaches it; from b,
    127.0.0.1 does."""
    a, b = hosts
    b.python_popen(ECHO, "127.0.0.1")
    hosts.wait_port(b, PORT, "127.0.0.1")
    assert (("127.0.0.1", PORT) in b.listeners()) and not b.listening(PORT, "0.0.0.0")
    assert not a.listening(PORT)
    on_a = a.python_popen(CLIENT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert _ask(on_a, "connect 1 127.0.0.1") == "error ConnectionRefusedError"
    assert _ask(on_a, "connect 2 hostb") == "error ConnectionRefusedError"
    on_b = b.python_popen(CLIENT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert _ask(on_b, "connect 1 127.0.0.1") == "ok"
    assert _ask(on_b, "send 1 local") == "ok"
    assert _ask(on_b, "recv 1 5") == "ok local"


def _machine_state() -> tuple[str, set[str]]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True,
                           text=True, check=True).stdout
    return netns, {line.split(":")[1].strip() for line in links.splitlines()}


def _running(host: Host, n: int) -> bool:
    return len(host.pids()) >= n


def _empty(netns: str) -> bool:
    return pids_in(netns) == []


def _mounts_under(directory: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if directory in line]


@pytest.mark.parametrize("fail", [False, True], ids=["passes", "fails"])
def test_nothing_outlives_the_pair(uname: str, fail: bool) -> None:
    """Processes on both hosts (a channel holder with its auto-started
    supervisor, a plain one, one that left its session in the background):
    after the pair, whether the test body passed or raised, none is left,
    nor any process in the hosts' namespaces, nor the pair's directory or a
    mount under it; ``ip netns list`` and the machine's veths are as before."""
    before = _machine_state()
    seen: dict[str, Any] = {}

    class Boom(Exception):
        pass

    with pytest.raises(Boom) if fail else contextlib.nullcontext(), two_hosts() as p:
        for h in p:
            _holding(h, uname)
            h.popen(["sleep", "300"])
            h.run(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 < /dev/null &"], check=True)
            wait_for("the background sleep", functools.partial(_running, h, 4), 10)
        seen = {"pids": p.a.pids() + p.b.pids(), "netns": [p.a.netns, p.b.netns],
                "holders": [p.a.pid, p.b.pid], "dir": p.directory}
        if fail:
            raise Boom
    assert len(seen["pids"]) >= 8
    for pid in seen["pids"] + seen["holders"]:
        assert netns_of(pid) not in seen["netns"], f"process {pid} outlived its host"
    for ns in seen["netns"]:
        assert pids_in(ns) == []
    assert not os.path.exists(seen["dir"])
    assert _mounts_under(seen["dir"]) == []
    after = _machine_state()
    assert after[0] == before[0]
    assert after[1] <= before[1]


DIES = """
import json, os, signal, subprocess, sys, time
from hosts_util import two_hosts
with two_hosts() as p:
    p.a.popen(["sleep", "300"])
    p.b.popen(["sleep", "300"])
    deadline = time.monotonic() + 30  # each enters its host's namespaces once started
    while not (p.a.pids() and p.b.pids()) and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps({"holders": [p.a.pid, p.b.pid], "netns": [p.a.netns, p.b.netns],
                      "pids": p.a.pids() + p.b.pids(), "dir": p.directory}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_hosts_go_when_the_test_process_dies() -> None:
    """A process that made a pair and started a program on each host is
    SIGKILLed before it can tear down: the holders see EOF, kill what runs on
    their hosts and exit; nothing is left in the hosts' namespaces."""
    proc = subprocess.run([sys.executable, "-c", DIES], capture_output=True, text=True,
                          timeout=TIMEOUT, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               os.environ.get("PYTHONPATH", "")])), check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    seen = json.loads(proc.stdout)
    assert len(seen["pids"]) == 2
    for ns in seen["netns"]:
        wait_for(f"the processes of {ns} gone", functools.partial(_empty, ns), 10)
    for pid in seen["pids"] + seen["holders"]:
        assert netns_of(pid) not in seen["netns"]
    assert _mounts_under(seen["dir"]) == []
    shutil.rmtree(seen["dir"])  # what the dead process could not remove
