"""CURVE keys for the bridge: key files, the peers a listener accepts, the
socket options, and the rule that a bridge without keys stays on loopback.

Why it is built this way:

- **Files like ssh's.** A key pair file is text a person can read and copy
  (``public = <z85>`` / ``secret = <z85>``); ``<file>.pub`` beside it holds
  the public key only, to hand to peers, and a listener's authorized-keys
  file is those lines put together. A file holding a secret key is refused,
  with the fix in the text, when its owner is another user or its group or
  others may read or write it (ssh's rule), and an authorized-keys file when
  anyone but its owner may write it (whoever can write it can let themselves
  in). Reading and parsing need no pyzmq; generating keys and checking that
  a secret matches its public key do.
- **Generated atomically, never over a file.** The pair is written to a
  temporary file in the same directory (``O_EXCL``, mode 0600, fsynced) and
  then *linked* to its name, not renamed: ``link`` fails when the name
  exists where ``rename`` would silently replace it, so two ``generate``
  calls racing for one name make one pair and one :class:`KeyFileExists`,
  and no reader ever sees half a file.
- **Our own ZAP handler** (zap.py), not pyzmq's ThreadAuthenticator: it
  serves every listening socket of a context, each with its own authorized
  set, and fails closed (``ZAP_ENFORCE_DOMAIN``) once it is stopped.
- **No keys, no network.** A bridge without keys listens on loopback only
  unless told otherwise, and then says so (:func:`check_listen_address`).
  Names are not resolved: only ``localhost`` itself counts as loopback.

What a refused client sees: nothing. Its socket connects, the handshake
fails, and no send or receive ever raises: messages wait in the client's
queue (or a ``zmq.IMMEDIATE`` socket has no peer to send to). Only its
socket monitor tells, measured with libzmq 4.3.5 over tcp loopback:

- its key not in the authorized set: the server's ZAP answer is 400, both
  monitors show ``HANDSHAKE_FAILED_AUTH`` (about 1 ms after connecting)
  and libzmq does not try again (one attempt in 2 s, where its reconnect
  interval is 100 ms), so a bridge whose key has been added since must
  connect a new socket;
- the wrong server key: the server cannot decrypt the hello, its monitor
  shows ``HANDSHAKE_FAILED_PROTOCOL``, the client's
  ``HANDSHAKE_FAILED_NO_DETAIL``, and libzmq retries forever;
- no CURVE at all: ``HANDSHAKE_FAILED_PROTOCOL`` on both (mechanism
  mismatch).

A good handshake completes in about 12 ms on loopback. So a bridge bounds
the wait itself: a connecting bridge that has not seen
``zmq.EVENT_HANDSHAKE_SUCCEEDED`` on its monitor (or its peer's first
reply) within :data:`HANDSHAKE_TIMEOUT` seconds of connecting gives up and
says why it may be (the server's public key, or this host's key missing
from the server's authorized-keys file). The listening side logs each
refused key once (logger ``shmring.bridge``) and counts every refusal
(:attr:`ServerAuth.refused`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .._errors import (
    InsecureListen,
    InvalidArgument,
    KeyFileError,
    KeyFileExists,
)
from . import z85, zap
from .deps import zmq_module
from .zap import ServerAuth

__all__ = ["HANDSHAKE_TIMEOUT", "KeyPair", "ServerAuth", "check_listen_address",
           "client_socket_options", "generate", "insecure_warning", "is_loopback", "load",
           "load_authorized", "server_socket_options"]


#: Seconds a connecting bridge waits for its first completed CURVE
#: handshake before it reports that the server does not accept it. A
#: handshake is two round trips: milliseconds on a LAN, well under a
#: second across continents; 10 s leaves room for a slow start of the peer.
HANDSHAKE_TIMEOUT = 10.0

_KEY_CHARS = 40  # a 32-byte CURVE key in z85
_MAX_FILE = 1 << 20  # a key file larger than this is not one


_zmq = zmq_module


def _key_error(path: str, line: int | None, text: str, **facts: int) -> KeyFileError:
    where = f"{path}:{line}" if line is not None else path
    e = KeyFileError(f"{where}: {text}")
    e.path, e.line = path, line
    for name, value in facts.items():
        setattr(e, name, value)
    return e


def _check_key(value: str, path: str, line: int) -> bytes:
    raw = value.encode("ascii")
    if len(raw) != _KEY_CHARS:
        raise _key_error(path, line, f"a CURVE key is {_KEY_CHARS} z85 characters, "
                                     f"this one is {len(raw)}")
    if z85.decode(raw) is None:
        raise _key_error(path, line, "not a z85-encoded key (RFC 32)")
    return raw


def _as_key(key: bytes | str, what: str) -> bytes:
    raw = key.encode("ascii", "replace") if isinstance(key, str) else bytes(key)
    if len(raw) != _KEY_CHARS or z85.decode(raw) is None:
        raise InvalidArgument(f"{what} must be a {_KEY_CHARS}-character z85 CURVE key, "
                              f"not {raw[:60]!r}")
    return raw


# ---------------------------------------------------------------- files --
@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair as ZeroMQ takes it: ``public`` and ``secret`` are
    40-byte z85 keys; ``secret`` is None for a peer's public key. ``path``
    is the file it was read from or written to (None if neither). The
    secret is kept out of the repr."""

    public: bytes
    secret: bytes | None = field(default=None, repr=False)
    path: str | None = None


def generate(path: str | os.PathLike[str]) -> KeyPair:
    """Make a new CURVE key pair and write it to ``path`` (mode 0600: only
    you can read it), and its public key alone to ``path + ".pub"`` (mode
    0644: hand it to the peers that should accept this host).

    Never overwrites: if either file exists, :class:`KeyFileExists` and
    nothing is written. Each file appears whole or not at all (written to a
    temporary file in the same directory, fsynced, then linked to its name).
    Needs pyzmq (:class:`MissingDependency` without it). Say
    ``generate("~/.config/shmring/bridge.key")`` after expanding the ``~``:
    then hand ``bridge.key.pub`` to the peers."""
    name = os.fspath(path)
    pub = name + ".pub"
    zmq = _zmq()
    public, secret = zmq.curve_keypair()
    for target in (name, pub):
        if os.path.lexists(target):
            raise _exists(target)
    _write_new(name, 0o600, _pair_text(public, secret))
    try:
        _write_new(pub, 0o644, _public_text(public))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return KeyPair(public=public, secret=secret, path=name)


def _pair_text(public: bytes, secret: bytes) -> bytes:
    return (b"# shmring bridge CURVE key pair. Keep it secret: mode 0600, yours only.\n"
            b"# Hand the .pub file beside it to the peers that should accept this host.\n"
            b"public = " + public + b"\nsecret = " + secret + b"\n")


def _public_text(public: bytes) -> bytes:
    return (b"# shmring bridge CURVE public key: add this line to a listening bridge's\n"
            b"# authorized-keys file to let this host in.\n"
            b"public = " + public + b"\n")


def _exists(target: str) -> KeyFileExists:
    e = KeyFileExists(f"{target}: already exists; not overwriting a key file "
                      "(remove it first to make a new pair)")
    e.path = target
    return e


def _write_new(target: str, mode: int, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".shmring-key-")  # O_EXCL, 0600
    except OSError as e:
        raise _key_error(target, None, f"cannot create a file in {directory}: "
                                       f"{e.strerror}") from e
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)  # fails if the name exists, where rename would replace
        except FileExistsError:
            raise _exists(target) from None
        except OSError as e:
            raise _key_error(target, None, f"cannot create: {e.strerror}") from e
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read(path: str) -> tuple[os.stat_result, list[tuple[int, str]]]:
    """The file's status (of the file opened, not of its name) and its
    lines that are not blank or comments, numbered from 1."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise _key_error(path, None, f"cannot open: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _key_error(path, None, "not a regular file")
        if st.st_size > _MAX_FILE:
            raise _key_error(path, None, f"{st.st_size} bytes: too large for a key file")
        data = os.read(fd, _MAX_FILE + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise _key_error(path, data[:e.start].count(b"\n") + 1,
                         "not text (a byte that is not ASCII)") from None
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append((number, line))
    return st, lines


def _assignment(line: str) -> tuple[str, str] | None:
    """``name = value`` split (name lowercased), or None if what stands
    before the first ``=`` is not a word."""
    name, eq, value = line.partition("=")
    name = name.strip()
    if not eq or not name.isalpha():
        return None
    return name.lower(), value.strip()


def _is_key(token: str) -> bool:
    raw = token.encode("ascii")
    return len(raw) == _KEY_CHARS and z85.decode(raw) is not None


def load(path: str | os.PathLike[str]) -> KeyPair:
    """Read a key pair file made by :func:`generate` (or its ``.pub``: then
    ``secret`` is None).

    A file with a secret key must be yours and readable and writable by you
    alone, or :class:`KeyFileError` says its mode or owner and the fix; bad
    content is a :class:`KeyFileError` naming the file and line. A secret
    is checked against its public key (that needs pyzmq)."""
    name = os.fspath(path)
    st, lines = _read(name)
    found: dict[str, tuple[int, bytes]] = {}
    for number, line in lines:
        pair = _assignment(line)
        if pair is None or pair[0] not in ("public", "secret"):
            raise _key_error(name, number, "expected 'public = <key>' or 'secret = <key>'")
        what, value = pair
        if what in found:
            raise _key_error(name, number, f"a second {what} key "
                                           f"(the first is on line {found[what][0]})")
        found[what] = (number, _check_key(value, name, number))
    if "public" not in found:
        raise _key_error(name, None, "no 'public = <key>' line")
    public = found["public"][1]
    if "secret" not in found:
        return KeyPair(public=public, secret=None, path=name)
    _check_private(name, st)
    number, secret = found["secret"]
    if _zmq().curve_public(secret) != public:
        raise _key_error(name, number, "this secret key is not the public key's: the file "
                                       "was edited (make a new pair with generate)")
    return KeyPair(public=public, secret=secret, path=name)


def _check_private(name: str, st: os.stat_result) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid():
        raise _key_error(name, None, f"holds a secret key but belongs to uid {st.st_uid}, "
                                     f"not to you (uid {os.geteuid()}); use a key of your own "
                                     f"or chown {os.geteuid()} {name}",
                         owner_uid=st.st_uid, mode=mode)
    if mode & 0o077:
        who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007))
                           if mode & bits)
        raise _key_error(name, None, f"holds a secret key but its mode is {mode:04o} "
                                     f"(open to {who}); run: chmod 600 {name}",
                         owner_uid=st.st_uid, mode=mode)


def load_authorized(path: str | os.PathLike[str]) -> set[bytes]:
    """The public keys a listening bridge accepts, read from ``path``: one
    per line, either bare (``<z85 key> [label]``) or as in a ``.pub`` file
    (``public = <z85 key>``); blank lines and lines starting with ``#`` are
    skipped (``#`` is one of z85's characters, but no key starts with it:
    its first group would pass 2**32). An empty file accepts nobody.

    The file must be yours (or root's) and writable by its owner only:
    whoever can write it can let themselves in. A secret key in it is
    refused (list the ``.pub`` files only)."""
    name = os.fspath(path)
    st, lines = _read(name)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (os.geteuid(), 0):
        raise _key_error(name, None, f"belongs to uid {st.st_uid}, not to you "
                                     f"(uid {os.geteuid()}) or root: its owner decides who "
                                     f"gets in; chown {os.geteuid()} {name}",
                         owner_uid=st.st_uid, mode=mode)
    if mode & 0o022:
        raise _key_error(name, None, f"mode {mode:04o} lets others than its owner write it, "
                                     f"and so let themselves in; run: chmod go-w {name}",
                         owner_uid=st.st_uid, mode=mode)
    keys: set[bytes] = set()
    for number, line in lines:
        first = line.split(None, 1)[0]
        pair = None if _is_key(first) else _assignment(line)
        if pair is None:
            if not _is_key(first):
                raise _key_error(name, number, "expected a public key (40 z85 characters, bare "
                                               f"or 'public = <key>'), not {first[:48]!r}")
            value = first  # bare (z85 holds "=", so a bare key is tried first)
        elif pair[0] == "public":
            value = pair[1].split(None, 1)[0] if pair[1] else ""
        elif pair[0] == "secret":
            raise _key_error(name, number, "a secret key has no place here: list the peers' "
                                           "public keys (their .pub files) only")
        else:
            raise _key_error(name, number, "expected a public key, bare or 'public = <key>'")
        keys.add(_check_key(value, name, number))
    return keys


# -------------------------------------------------------------- sockets --
def client_socket_options(sock: Any, keys: KeyPair | None, server_public: bytes | str) -> None:
    """Make ``sock`` (before it connects) a CURVE client of the server whose
    public key is ``server_public``, as ``keys`` (a pair with its secret;
    None: a fresh pair for this socket alone, for a server that accepts any
    key). A server that refuses it never answers: see the module's notes
    and :data:`HANDSHAKE_TIMEOUT`."""
    zmq = _zmq()
    server = _as_key(server_public, "the server's public key")
    if keys is None:
        public, secret = zmq.curve_keypair()
    else:
        public, secret = _own_pair(keys, "a connecting bridge")
    sock.setsockopt(zmq.CURVE_SERVERKEY, server)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


def _own_pair(keys: KeyPair, who: str) -> tuple[bytes, bytes]:
    public = _as_key(keys.public, "the public key")
    if keys.secret is None:
        where = f" ({keys.path} is a public key only)" if keys.path else ""
        e = KeyFileError(f"{who} needs its own key pair with its secret key{where}; "
                         "make one with generate()")
        e.path = keys.path
        raise e
    return public, _as_key(keys.secret, "the secret key")


def server_socket_options(sock: Any, keys: KeyPair, authorized: set[bytes] | None,
                          ) -> ServerAuth | None:
    """Make ``sock`` (before it binds) a CURVE server with ``keys`` (a pair
    with its secret). With ``authorized`` (z85 public keys, as
    :func:`load_authorized` returns them; an empty set accepts nobody) only
    those clients complete the handshake, checked by a ZAP handler thread in
    the socket's context, and the :class:`ServerAuth` returned must be
    closed with the socket. With None any client that speaks CURVE and
    knows the server's public key gets in (encrypted, not authenticated);
    returns None then."""
    zmq = _zmq()
    public, secret = _own_pair(keys, "a listening bridge")
    wanted = None if authorized is None else {
        z85.decode(_as_key(k, "an authorized key")) or b"" for k in authorized}
    auth = None
    if wanted is not None:
        auth = zap.register(zmq, sock.context, frozenset(wanted))
        try:
            sock.setsockopt(zmq.ZAP_DOMAIN, auth.domain)
            with contextlib.suppress(zmq.ZMQError, AttributeError):
                # Without it (a libzmq built without the option) a dead
                # handler would let everyone in; ours lives until closed.
                sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        except BaseException:
            auth.close()
            raise
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    return auth


# ------------------------------------------------------------ listening --
def is_loopback(url: str) -> bool:
    """Whether a ZeroMQ address reaches this host only: ``ipc://`` and
    ``inproc://``, or ``tcp://`` (``ws://``, ``wss://``) on 127.0.0.0/8,
    ``[::1]`` or ``localhost``. Names are not resolved: any other name, an
    interface name, ``*`` and ``0.0.0.0`` are not loopback."""
    scheme, host = _split_address(url)
    if scheme in ("ipc", "inproc"):
        return True
    if scheme not in ("tcp", "ws", "wss") or host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _split_address(url: str) -> tuple[str, str | None]:
    """The transport and (for tcp, ws, wss) the host of a ZeroMQ address."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not rest:
        raise InvalidArgument(f"not a ZeroMQ address: {url!r} (tcp://HOST:PORT or ipc://PATH)")
    scheme = scheme.lower()
    if scheme not in ("tcp", "ws", "wss"):
        return scheme, None
    rest = rest.split("/", 1)[0] if scheme != "tcp" else rest
    if rest.startswith("["):
        host, bracket, _ = rest[1:].partition("]")
        if not bracket:
            raise InvalidArgument(f"not a ZeroMQ address: {url!r} (no ']' after the IPv6 host)")
        return scheme, host
    return scheme, rest.rpartition(":")[0] if ":" in rest else rest


def check_listen_address(url: str, secure: bool, allow_insecure: bool) -> str | None:
    """Whether a bridge may listen on ``url``: with CURVE keys (``secure``)
    anywhere; without them on loopback only (:func:`is_loopback`), unless
    ``allow_insecure`` (``--insecure``). Refused: :class:`InsecureListen`,
    saying how to allow it. Allowed: the warning the bridge must print
    (:func:`insecure_warning`) when it listens insecurely off loopback, else
    None."""
    if is_loopback(url) or secure:  # parsed (and so checked) either way
        return None
    if not allow_insecure:
        e = InsecureListen(
            f"refusing to listen on {url} without CURVE keys: any host that can reach it "
            "could connect, read the exported channels and send into the imported ones, "
            "and messages would cross the network in clear text. Give the bridge a key pair "
            "(and an authorized-keys file), or listen on loopback (tcp://127.0.0.1:PORT, "
            "ipc://PATH), or pass --insecure to listen there anyway")
        e.url = url
        raise e
    return insecure_warning(url)


def insecure_warning(url: str) -> str:
    """The warning a bridge prints when it listens on ``url``, off loopback,
    without CURVE keys (``--insecure``)."""
    return (f"WARNING: listening on {url} without CURVE keys (--insecure): any host that "
            "can reach this address can connect, read the exported channels and send into "
            "the imported ones, and messages cross the network in clear text")
