"""When no supervisor can be reached or started, the error is a
:class:`shmring.SupervisorUnavailable` (a ``ConnectionError``) that says
what to do, with the cause chained, never a raw ``OSError``: a bad
``SHMRING_SOCKET_DIR`` used to surface as ``FileNotFoundError``, which
callers took for :class:`shmring.RegionNotFound`.

Each cause is made for real, in the file system. (Another user whose
interpreter cannot start a supervisor: ``test_errors_other_user.py``.)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import pytest
from supervisor_util import Env

import shmring
from shmring._region.names import default_namespace

_ns = itertools.count()


@pytest.fixture(autouse=True)
def lonely_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A namespace nobody supervises: a supervisor already running for the
    process's own namespace would be found through its instance guard,
    whatever socket directory a test breaks."""
    monkeypatch.setenv("SHMRING_NAMESPACE", f"auto-{os.getpid()}-{next(_ns)}")


def _check(e: shmring.SupervisorUnavailable, cause: type[BaseException]) -> None:
    assert isinstance(e, ConnectionError)
    assert isinstance(e.__cause__, cause)
    text = str(e)
    assert "SHMRING_SOCKET_DIR" in text
    assert "`shmring supervisor`" in text
    assert "SHMRING_SUPERVISOR=0" in text


def test_missing_socket_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: object,
                                  uname: str) -> None:
    bad = os.path.join(str(tmp_path), "no", "such", "dir")
    monkeypatch.setenv("SHMRING_SOCKET_DIR", bad)
    with pytest.raises(shmring.SupervisorUnavailable) as info:
        shmring.Channel.create(uname, capacity=4096)
    assert not isinstance(info.value, FileNotFoundError)
    assert repr(bad) in str(info.value)
    _check(info.value, FileNotFoundError)
    assert not os.path.exists(f"/dev/shm/shmring.{default_namespace()}.{uname}")


def test_missing_socket_directory_on_open(monkeypatch: pytest.MonkeyPatch, tmp_path: object,
                                          make_channel: Callable[..., shmring.Channel],
                                          uname: str) -> None:
    ch = make_channel(supervised=False)
    monkeypatch.setenv("SHMRING_SOCKET_DIR", os.path.join(str(tmp_path), "gone"))
    os.rmdir(str(tmp_path))
    with pytest.raises(shmring.SupervisorUnavailable) as info:
        shmring.Channel.open(uname)
    _check(info.value, FileNotFoundError)
    assert len(ch.region.slots()) == 1  # the failed open gave its slot back


def test_spawn_lock_that_cannot_be_opened(env: Env, uname: str) -> None:
    # Something that is not a file sits where the spawn lock goes.
    os.mkdir(os.path.join(env.socket_dir, f"{env.namespace}.spawn"))
    with pytest.raises(shmring.SupervisorUnavailable) as info:
        shmring.Channel.create(uname, capacity=4096)
    _check(info.value, IsADirectoryError)
    assert "cannot start a supervisor" in str(info.value)
    assert not os.path.exists(env.shm(uname))


def test_socket_path_too_long(monkeypatch: pytest.MonkeyPatch, tmp_path: object,
                              uname: str) -> None:
    deep = os.path.join(str(tmp_path), "d" * 120)
    os.mkdir(deep, 0o700)
    monkeypatch.setenv("SHMRING_SOCKET_DIR", deep)
    with pytest.raises(shmring.SupervisorUnavailable) as info:
        shmring.Channel.create(uname, capacity=4096)
    _check(info.value, OSError)
    assert "socket paths are limited to 107 bytes" in str(info.value)
    assert not os.path.exists(f"/dev/shm/shmring.{default_namespace()}.{uname}")

