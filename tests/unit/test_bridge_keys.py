"""The bridge's CURVE keys: key files (made, read, refused), authorized-keys
files, CURVE on real ZeroMQ sockets over tcp loopback and ipc (who gets
through, who does not, and what the server saw), and the rule that a bridge
without keys listens on loopback only.

A refused client gets no error from ZeroMQ, so the tests that expect
nothing to arrive first wait for the server to have seen the handshake fail
(its socket monitor's event, the ZAP handler's count), then check that the
message did not come."""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils import z85 as zmq_z85
from zmq.utils.monitor import recv_monitor_message

import shmring
from shmring._bridge import keys as K
from shmring._bridge import z85
from shmring._errors import InsecureListen, KeyFileError, KeyFileExists, MissingDependency

NOBODY = 65534
WAIT = 20.0  # bound on waiting for an event the test expects to happen (a loaded machine is slow)


# ---------------------------------------------------------------- files --
def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generate_writes_a_private_pair_and_a_public_file(tmp_path: Path) -> None:
    path = tmp_path / "bridge.key"
    made = K.generate(path)
    assert _mode(path) == 0o600 and _mode(f"{path}.pub") == 0o644
    assert sorted(os.listdir(tmp_path)) == ["bridge.key", "bridge.key.pub"]  # no temp left
    assert made.secret is not None and len(made.public) == len(made.secret) == 40
    assert zmq.curve_public(made.secret) == made.public
    assert K.load(path) == made
    pub = K.load(f"{path}.pub")
    assert pub.public == made.public and pub.secret is None
    assert b"secret" not in Path(f"{path}.pub").read_bytes()
    assert made.secret.decode() not in repr(made)
    # Two pairs are two pairs.
    other = K.generate(tmp_path / "other.key")
    assert other.public != made.public and other.secret != made.secret


def test_generate_ignores_the_umask_for_the_public_file(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        K.generate(tmp_path / "k")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == 0o600 and _mode(tmp_path / "k.pub") == 0o644


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    K.generate(path)
    before = (path.read_bytes(), Path(f"{path}.pub").read_bytes())
    with pytest.raises(KeyFileExists, match="already exists") as e:
        K.generate(path)
    assert isinstance(e.value, FileExistsError) and e.value.path == str(path)
    assert (path.read_bytes(), Path(f"{path}.pub").read_bytes()) == before
    # A .pub alone is in the way too, and then nothing is made.
    lone = tmp_path / "lone"
    Path(f"{lone}.pub").write_text("mine\n")
    with pytest.raises(KeyFileExists):
        K.generate(lone)
    assert not lone.exists() and Path(f"{lone}.pub").read_text() == "mine\n"
    # So is a dangling symlink: never written through.
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(KeyFileExists):
        K.generate(link)
    assert not (tmp_path / "nowhere").exists()


def test_generate_in_a_missing_directory_is_a_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot create a file in"):
        K.generate(tmp_path / "no" / "such" / "k")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o700, 0o660])
def test_a_secret_key_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    K.generate(path)
    os.chmod(path, mode)
    if not mode & 0o077:  # 0700: still yours alone
        assert K.load(path).secret is not None
        return
    with pytest.raises(KeyFileError) as e:
        K.load(path)
    text = str(e.value)
    assert f"mode is {mode:04o}" in text and f"chmod 600 {path}" in text
    assert e.value.mode == mode and e.value.path == str(path) and e.value.line is None
    assert isinstance(e.value, ValueError)
    os.chmod(path, 0o600)
    assert K.load(path).secret is not None


def test_a_secret_key_of_another_user_is_refused(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "the suite runs as root, to hand files to another user"
    path = tmp_path / "k"
    made = K.generate(path)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(KeyFileError, match=f"belongs to uid {NOBODY}") as e:
        K.load(path)
    assert e.value.owner_uid == NOBODY
    # A public key may be anyone's and readable by all.
    os.chown(f"{path}.pub", NOBODY, NOBODY)
    assert K.load(f"{path}.pub").public == made.public


def _pair_lines() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


@pytest.mark.parametrize(("body", "line", "says"), [
    ("public = {p}\nsecret = {s}\ngarbage\n", 3, "expected 'public = <key>'"),
    ("# c\n\npublic = {p}x\nsecret = {s}\n", 3, "this one is 41"),
    ("public = {p}\nsecret = {short}\n", 2, "this one is 39"),
    ("public = {p}\nsecret = ~{s39}\n", 2, "not a z85-encoded key"),
    ("public = #####{p35}\n", 1, "not a z85-encoded key"),  # a group over 2**32
    ("public = {p}\npublic = {p}\n", 2, "a second public key (the first is on line 1)"),
    ("public = {p}\nsecret = {s}\nsecret = {s}\n", 3, "a second secret key"),
    ("colour = blue\n", 1, "expected 'public = <key>'"),
    ("public = {p}\nsecret = {other}\n", 2, "not the public key's"),
    ("public = {p}\n# caf\xe9\n", 2, "not text"),
    ("secret = {s}\n", None, "no 'public = <key>' line"),
    ("", None, "no 'public = <key>' line"),
])
def test_bad_content_names_the_file_and_line(tmp_path: Path, body: str, line: int | None,
                                             says: str) -> None:
    p, s = _pair_lines()
    text = body.format(p=p, s=s, short=s[:39], s39=s[:39], p35=p[:35],
                       other=_pair_lines()[1])
    path = tmp_path / "k"
    path.write_bytes(text.encode("latin-1"))
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError) as e:
        K.load(path)
    assert says in str(e.value)
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert str(e.value).startswith(where)
    assert e.value.line == line and e.value.path == str(path)


def test_not_a_key_file_at_all(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot open: No such file"):
        K.load(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="not a regular file"):
        K.load(tmp_path)
    big = tmp_path / "big"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(KeyFileError, match="too large"):
        K.load(big)


def test_load_authorized_reads_every_form(tmp_path: Path) -> None:
    a, b, c = (K.generate(tmp_path / n) for n in "abc")
    eq = next(k for k in (zmq.curve_keypair()[0] for _ in range(500)) if b"=" in k[:20])
    hashed = next(k for k in (zmq.curve_keypair()[0] for _ in range(500)) if b"#" in k)
    path = tmp_path / "authorized"
    path.write_text(
        "# who may connect\n\n"
        f"{a.public.decode()}\n"
        f"   {b.public.decode()}  alice@hosta (a label)\n"
        + Path(tmp_path / "c.pub").read_text()  # a .pub file as it is
        + f"{eq.decode()}\n"  # a bare key holding '='
        + f"public = {hashed.decode()} # bob\n")  # '#' is z85 (never a key's first)
    assert K.load_authorized(path) == {a.public, b.public, c.public, eq, hashed}
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    assert K.load_authorized(empty) == set()


@pytest.mark.parametrize(("body", "line", "says"), [
    ("{p}\n{s}x\n", 2, "expected a public key"),
    ("# ok\n{p}\nsecret = {s}\n", 3, "a secret key has no place here"),
    ("{p}\nnot a key\n", 2, "expected a public key"),
    ("public = \n", 1, "this one is 0"),
])
def test_load_authorized_refuses_bad_lines(tmp_path: Path, body: str, line: int,
                                           says: str) -> None:
    p, s = _pair_lines()
    path = tmp_path / "authorized"
    path.write_text(body.format(p=p, s=s))
    with pytest.raises(KeyFileError, match=says) as e:
        K.load_authorized(path)
    assert str(e.value).startswith(f"{path}:{line}:") and e.value.line == line


def test_load_authorized_refuses_a_file_others_may_write(tmp_path: Path) -> None:
    path = tmp_path / "authorized"
    path.write_text(_pair_lines()[0] + "\n")
    for mode in (0o664, 0o646):
        os.chmod(path, mode)
        with pytest.raises(KeyFileError, match=re.escape(f"chmod go-w {path}")) as e:
            K.load_authorized(path)
        assert e.value.mode == mode
    os.chmod(path, 0o644)
    assert len(K.load_authorized(path)) == 1
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(KeyFileError, match=f"belongs to uid {NOBODY}") as e:
        K.load_authorized(path)
    assert e.value.owner_uid == NOBODY


def test_without_pyzmq_keys_load_and_generating_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = K.generate(tmp_path / "k")
    authorized = tmp_path / "authorized"
    shutil.copy(f"{tmp_path / 'k'}.pub", authorized)
    monkeypatch.setitem(sys.modules, "zmq", None)  # what Python does when it is not installed
    assert K.load(f"{tmp_path / 'k'}.pub").public == made.public
    assert K.load_authorized(authorized) == {made.public}
    with pytest.raises(MissingDependency, match=r"pip install 'shmring\[bridge\]'") as e:
        K.generate(tmp_path / "k2")
    assert isinstance(e.value, ImportError) and not (tmp_path / "k2").exists()
    with pytest.raises(MissingDependency):
        K.load(tmp_path / "k")  # a secret is checked against its public key by libzmq


def test_z85_matches_libzmq() -> None:
    for _ in range(20):
        raw = os.urandom(32)
        assert z85.encode(raw) == zmq_z85.encode(raw)
        assert z85.decode(zmq_z85.encode(raw)) == raw
    assert z85.decode(b"abcd") is None and z85.decode(b"abcd~") is None


# -------------------------------------------------------------- sockets --
class Monitor:
    """The events a socket's monitor reports, collected as they come."""

    def __init__(self, sock: zmq.Socket[bytes], name: str) -> None:
        self.sock = sock
        self.events: list[int] = []
        self._mon = sock.get_monitor_socket(addr=f"inproc://mon-{name}-{id(self)}")

    def _drain(self, timeout_ms: int) -> None:
        if self._mon.poll(timeout_ms):
            self.events.append(int(recv_monitor_message(self._mon)["event"]))

    def wait_for(self, *events: int, timeout: float = WAIT) -> int:
        """The first of ``events`` reported (waiting for it, up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = [e for e in self.events if e in events]
            if seen:
                return seen[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"none of {events} in {self.events} after {timeout} s")
            self._drain(50)

    def close(self) -> None:
        while self._mon.poll(0):
            self._drain(0)
        # Stopped before either socket closes: a monitor left running breaks
        # later sockets of the context.
        self.sock.disable_monitor()
        self._mon.close(0)


class Net:
    """Sockets of one context, with their monitors; all closed at the end."""

    def __init__(self, ipc_dir: str) -> None:
        self.ctx = zmq.Context()
        self.ipc_dir = ipc_dir
        self.sockets: list[zmq.Socket[bytes]] = []
        self.monitors: list[Monitor] = []
        self.auths: list[K.ServerAuth] = []

    def socket(self, kind: int) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        self.sockets.append(s)
        return s

    def monitor(self, sock: zmq.Socket[bytes], name: str) -> Monitor:
        m = Monitor(sock, name)
        self.monitors.append(m)
        return m

    def server(self, keys: K.KeyPair, authorized: set[bytes] | None, transport: str,
               ) -> tuple[zmq.Socket[bytes], str, Monitor, K.ServerAuth | None]:
        s = self.socket(zmq.PULL)
        auth = K.server_socket_options(s, keys, authorized)
        if auth is not None:
            self.auths.append(auth)
        mon = self.monitor(s, "server")
        if transport == "tcp":
            url = f"tcp://127.0.0.1:{s.bind_to_random_port('tcp://127.0.0.1')}"
        else:
            url = f"ipc://{self.ipc_dir}/s{len(self.sockets)}"
            s.bind(url)
        return s, url, mon, auth

    def client(self, url: str, keys: K.KeyPair | None, server_public: bytes | None,
               ) -> tuple[zmq.Socket[bytes], Monitor]:
        c = self.socket(zmq.PUSH)
        if server_public is not None:
            K.client_socket_options(c, keys, server_public)
        mon = self.monitor(c, "client")
        c.connect(url)
        c.send(b"hello", zmq.NOBLOCK)  # queued until a handshake completes, if ever
        return c, mon

    def close(self) -> None:
        for m in self.monitors:
            m.close()
        for a in self.auths:
            a.close()
        for s in self.sockets:
            s.close(0)
        self.ctx.term()


@pytest.fixture
def net() -> Iterator[Net]:
    ipc_dir = tempfile.mkdtemp(prefix="shmring-keys-")  # short: ipc paths are <108 bytes
    n = Net(ipc_dir)
    try:
        yield n
    finally:
        n.close()
        shutil.rmtree(ipc_dir)


@pytest.fixture
def pairs(tmp_path: Path) -> Callable[[str], K.KeyPair]:
    return lambda name: K.generate(tmp_path / name)


def _got(sock: zmq.Socket[bytes], timeout_ms: int) -> bytes | None:
    return sock.recv() if sock.poll(timeout_ms) else None


FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
          zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_matching_keys_pass_messages(net: Net, pairs: Callable[[str], K.KeyPair],
                                     transport: str) -> None:
    server, client = pairs("server"), pairs("client")
    srv, url, smon, auth = net.server(server, {client.public}, transport)
    cli, cmon = net.client(url, client, server.public)
    assert srv.poll(int(WAIT * 1000))
    msg = srv.recv(copy=False)
    assert msg.bytes == b"hello"
    assert msg.get("User-Id") == client.public.decode()  # the ZAP handler's user id
    for i in range(100):
        cli.send(b"m%d" % i)
    assert [srv.recv() for _ in range(100)] == [b"m%d" % i for i in range(100)]
    assert smon.wait_for(zmq.EVENT_HANDSHAKE_SUCCEEDED) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert cmon.wait_for(zmq.EVENT_HANDSHAKE_SUCCEEDED) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert auth is not None and auth.accepted == 1 and auth.refused == 0


def test_without_an_authorized_set_any_curve_client_gets_in(
        net: Net, pairs: Callable[[str], K.KeyPair]) -> None:
    server = pairs("server")
    srv, url, _, auth = net.server(server, None, "tcp")
    assert auth is None
    net.client(url, None, server.public)  # a fresh pair of its own
    assert _got(srv, int(WAIT * 1000)) == b"hello"


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_key_not_authorized_gets_nothing_through(
        net: Net, pairs: Callable[[str], K.KeyPair], transport: str,
        caplog: pytest.LogCaptureFixture) -> None:
    server, known, stranger = pairs("server"), pairs("known"), pairs("stranger")
    srv, url, smon, auth = net.server(server, {known.public}, transport)
    assert auth is not None
    with caplog.at_level(logging.WARNING, logger="shmring.bridge"):
        _, cmon = net.client(url, stranger, server.public)
        assert smon.wait_for(*FAILED) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert cmon.wait_for(*FAILED) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert _got(srv, 300) is None
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in smon.events + cmon.events
    # Refused once: libzmq does not retry after a ZAP 400 (its reconnect
    # interval, 100 ms, passed three times over while we waited above).
    assert auth.accepted == 0 and auth.refused == 1
    assert stranger.public.decode() in caplog.text
    # The one it knows still gets in, on the same socket.
    net.client(url, known, server.public)
    assert _got(srv, int(WAIT * 1000)) == b"hello"
    assert auth.accepted == 1


def test_the_wrong_server_key_gets_nothing_through(
        net: Net, pairs: Callable[[str], K.KeyPair]) -> None:
    server, client, impostor = pairs("server"), pairs("client"), pairs("impostor")
    srv, url, smon, auth = net.server(server, {client.public}, "tcp")
    _, cmon = net.client(url, client, impostor.public)
    # The server cannot decrypt a hello sealed for another key.
    assert smon.wait_for(*FAILED) == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    assert cmon.wait_for(*FAILED) == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    assert _got(srv, 300) is None
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in smon.events + cmon.events
    assert auth is not None and auth.accepted == 0  # never got as far as asking


def test_a_plain_client_cannot_talk_to_a_curve_server(
        net: Net, pairs: Callable[[str], K.KeyPair]) -> None:
    server = pairs("server")
    srv, url, smon, _ = net.server(server, None, "tcp")
    _, cmon = net.client(url, None, None)  # no CURVE at all
    assert smon.wait_for(*FAILED) == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    assert cmon.wait_for(*FAILED) == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    assert _got(srv, 300) is None
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in smon.events + cmon.events


def test_two_listeners_of_one_context_each_accept_their_own(
        net: Net, pairs: Callable[[str], K.KeyPair]) -> None:
    server, a, b = pairs("server"), pairs("a"), pairs("b")
    srv_a, url_a, mon_a, auth_a = net.server(server, {a.public}, "tcp")
    srv_b, url_b, _, auth_b = net.server(server, {b.public}, "tcp")
    assert auth_a is not None and auth_b is not None and auth_a.domain != auth_b.domain
    net.client(url_a, b, server.public)  # b knocks at a's door
    assert mon_a.wait_for(*FAILED) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    net.client(url_b, b, server.public)
    assert _got(srv_b, int(WAIT * 1000)) == b"hello"
    assert _got(srv_a, 300) is None
    assert (auth_a.accepted, auth_b.accepted, auth_b.refused) == (0, 1, 0)


def test_after_the_handler_stops_nobody_gets_in(
        net: Net, pairs: Callable[[str], K.KeyPair]) -> None:
    server, client = pairs("server"), pairs("client")
    srv, url, smon, auth = net.server(server, {client.public}, "tcp")
    assert auth is not None
    auth.close()
    assert auth.accepted == 0
    auth.close()  # idempotent
    net.client(url, client, server.public)
    assert smon.wait_for(*FAILED) in FAILED
    assert _got(srv, 300) is None
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in smon.events
    # A new registration starts a new handler, and the context terms (Net.close).
    again = K.server_socket_options(net.socket(zmq.PULL), server, set())
    assert again is not None
    net.auths.append(again)


def test_a_context_with_another_zap_handler_is_refused(
        net: Net, pairs: Callable[[str], K.KeyPair]) -> None:
    from zmq.auth.thread import ThreadAuthenticator
    other = ThreadAuthenticator(net.ctx)
    other.start()
    try:
        with pytest.raises(shmring.ShmringError, match="already has a ZAP handler"):
            K.server_socket_options(net.socket(zmq.PULL), pairs("server"), set())
    finally:
        other.stop()


def test_socket_options_refuse_bad_keys(net: Net, pairs: Callable[[str], K.KeyPair],
                                        tmp_path: Path) -> None:
    server = pairs("server")
    public_only = K.load(tmp_path / "server.pub")
    with pytest.raises(KeyFileError, match="needs its own key pair"):
        K.server_socket_options(net.socket(zmq.PULL), public_only, None)
    with pytest.raises(KeyFileError, match=r"server\.pub is a public key only"):
        K.client_socket_options(net.socket(zmq.PUSH), public_only, server.public)
    with pytest.raises(shmring.InvalidArgument, match="server's public key must be"):
        K.client_socket_options(net.socket(zmq.PUSH), server, b"short")
    with pytest.raises(shmring.InvalidArgument, match="an authorized key must be"):
        K.server_socket_options(net.socket(zmq.PULL), server, {b"~" * 40})


# ------------------------------------------------------------ listening --
LOOPBACK = ["tcp://127.0.0.1:7470", "tcp://127.3.2.1:1", "tcp://[::1]:7470",
            "tcp://localhost:7470", "tcp://LocalHost:7470", "tcp://127.0.0.1:*",
            "tcp://[::ffff:127.0.0.1]:7470", "ipc:///tmp/shmring-bridge", "ipc://@abstract",
            "inproc://bridge", "ws://127.0.0.1:8080/bridge"]
EXPOSED = ["tcp://0.0.0.0:7470", "tcp://*:7470", "tcp://192.168.1.20:7470", "tcp://10.1.2.3:1",
           "tcp://[::]:7470", "tcp://[fe80::1%eth0]:7470", "tcp://eth0:7470",
           "tcp://hostb:7470", "tcp://localhost.example.com:7470", "tcp://127.0.0.1.nip.io:1",
           "ws://0.0.0.0:8080/bridge", "udp://127.0.0.1:7470", "pgm://eth0;239.1.1.1:7470"]


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_needs_no_keys(url: str) -> None:
    assert K.is_loopback(url)
    assert K.check_listen_address(url, secure=False, allow_insecure=False) is None


@pytest.mark.parametrize("url", EXPOSED)
def test_exposed_without_keys_is_refused_unless_allowed(url: str) -> None:
    assert not K.is_loopback(url)
    with pytest.raises(InsecureListen, match="--insecure") as e:
        K.check_listen_address(url, secure=False, allow_insecure=False)
    assert e.value.url == url and url in str(e.value)
    assert isinstance(e.value, shmring.InvalidArgument)
    warning = K.check_listen_address(url, secure=False, allow_insecure=True)
    assert warning == K.insecure_warning(url) and url in warning and "WARNING" in warning
    assert K.check_listen_address(url, secure=True, allow_insecure=False) is None


@pytest.mark.parametrize("url", ["127.0.0.1:7470", "tcp://", "://x", "tcp://[::1:7470"])
def test_a_malformed_address_is_an_invalid_argument(url: str) -> None:
    with pytest.raises(shmring.InvalidArgument, match="not a ZeroMQ address") as e:
        K.check_listen_address(url, secure=True, allow_insecure=True)
    assert not isinstance(e.value, InsecureListen)



def test_terminating_the_context_first_ends_the_handler(
        pairs: Callable[[str], K.KeyPair]) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    auth = K.server_socket_options(sock, pairs("server"), set())
    assert auth is not None
    sock.close(0)
    terminator = threading.Thread(target=ctx.term, daemon=True)
    terminator.start()
    terminator.join(WAIT)
    assert not terminator.is_alive(), "ctx.term() hung on the ZAP handler's socket"
    auth.close()  # still fine afterwards
    # The next context gets a handler of its own.
    with zmq.Context() as ctx2:
        sock2 = ctx2.socket(zmq.PULL)
        auth2 = K.server_socket_options(sock2, pairs("server2"), set())
        assert auth2 is not None
        auth2.close()
        sock2.close(0)


def _race(path: str, out: Any, start: Any) -> None:
    start.wait()
    try:
        K.generate(path)
        out.put("made")
    except KeyFileExists:
        out.put("exists")


def test_racing_generates_make_one_pair(tmp_path: Path) -> None:
    fork = multiprocessing.get_context("fork")
    for i in range(5):
        path = str(tmp_path / f"k{i}")
        out, start = fork.Queue(), fork.Barrier(4)
        procs = [fork.Process(target=_race, args=(path, out, start)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(WAIT * 4)
        assert [p.exitcode for p in procs] == [0] * 4
        assert sorted(out.get(timeout=WAIT) for _ in procs) == ["exists"] * 3 + ["made"]
        made = K.load(path)
        assert K.load(path + ".pub").public == made.public
    assert len(os.listdir(tmp_path)) == 10  # no temporary file left behind
