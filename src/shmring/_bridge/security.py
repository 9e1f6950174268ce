"""What a bridge's sockets are secured with: its CURVE key pair, the
listening side's authorized client keys, the connecting side's server key
(``keys.py``), and the ZAP registrations to close with the bridge."""

from __future__ import annotations

import threading
from typing import Any

from .._errors import InvalidArgument
from . import keys as _keys


class Security:
    """CURVE for every socket of one bridge: ``apply(sock, listen, url)``
    runs before a socket binds or connects."""

    def __init__(self, pair: _keys.KeyPair, authorized: set[bytes] | None,
                 server_public: bytes | None) -> None:
        self.pair, self.authorized, self.server_public = pair, authorized, server_public
        self._auths: list[Any] = []
        self._lock = threading.Lock()

    @classmethod
    def from_files(cls, keys: str, authorized: str | None = None,
                   server_key: str | None = None) -> Security:
        """Load the key pair ``keys``, the authorized-keys file and the
        server's public key file (``FILE.pub``)."""
        pair = _keys.load(keys)
        if pair.secret is None:
            raise InvalidArgument(f"{keys}: a bridge needs its key pair (the file with the "
                                  "secret key), not a public key file")
        allowed = _keys.load_authorized(authorized) if authorized else None
        server = _keys.load(server_key).public if server_key else None
        return cls(pair, allowed, server)

    def apply(self, sock: Any, listen: bool, url: str) -> None:
        """Set CURVE options on ``sock`` (a server when ``listen``)."""
        if listen:
            auth = _keys.server_socket_options(sock, self.pair, self.authorized)
            if auth is not None:
                with self._lock:
                    self._auths.append(auth)
            return
        if self.server_public is None:
            raise InvalidArgument(f"connecting to {url} with CURVE keys needs the server's "
                                  "public key (--server-key FILE.pub)")
        _keys.client_socket_options(sock, self.pair, self.server_public)

    def refused(self) -> int:
        """Clients refused so far (a key not authorized)."""
        with self._lock:
            return sum(a.refused for a in self._auths)

    def close(self) -> None:
        """Stop the ZAP registrations (after the sockets are closed)."""
        with self._lock:
            auths, self._auths = self._auths, []
        for a in auths:
            a.close()
