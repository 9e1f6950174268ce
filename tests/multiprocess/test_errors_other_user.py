"""Another user meets our regions: ``mode=`` is applied exactly (not through
the umask), only permission bits are accepted, and a refusal says whether
the mode keeps that user out or the region is simply another user's.

The other user is real: a forked child that drops to uid/gid 65534. (The
test suite runs as root; a child must import what it needs before dropping,
since the interpreter's own files may not be readable by nobody.)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from user_util import NOBODY, as_nobody

import shmring
from shmring._region.names import default_namespace

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")


def _file(ch: shmring.Channel) -> str:
    return "/dev/shm/" + ch.region.segment.lstrip("/")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _refusal(name: str) -> Callable[[dict[str, Any]], None]:
    def attempt(out: dict[str, Any]) -> None:
        try:
            shmring.Channel.open(name, timeout=0.5, supervised=False)
        except shmring.PermissionDenied as e:
            out.update(kind="PermissionDenied", message=str(e), mode=e.mode,
                       owner_uid=e.owner_uid, is_permission_error=isinstance(e, PermissionError))
        else:
            out["kind"] = "opened"
    return attempt


# ---------------------------------------------------------------- the mode --


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o666, 0o000])
def test_mode_is_applied_exactly_whatever_the_umask(
        make_channel: Callable[..., shmring.Channel], umask_022: None, mode: int) -> None:
    ch = make_channel(mode=mode, supervised=False, suffix=f"-{mode:o}")
    assert os.stat(_file(ch)).st_mode & 0o7777 == mode


@pytest.mark.parametrize("mode", [0o7777, 0o1000, 0o4600, -1, True, 0o600 + 0.0, "0o600"])
def test_only_permission_bits_are_accepted(uname: str, mode: object) -> None:
    with pytest.raises(shmring.InvalidArgument, match=r"mode .* between 0o000 and 0o777"):
        shmring.Channel.create(uname, capacity=4096, mode=mode,  # type: ignore[arg-type]
                               supervised=False)
    assert not os.path.exists(f"/dev/shm/shmring.{default_namespace()}.{uname}")


# ------------------------------------------------------- another user --


def test_owner_only_region_says_it_belongs_to_another_user(
        make_channel: Callable[..., shmring.Channel], uname: str) -> None:
    ch = make_channel(mode=0o600, supervised=False)
    out = as_nobody(_refusal(uname))
    assert out.get("kind") == "PermissionDenied", out
    assert out["is_permission_error"]
    assert "belongs to uid 0" in out["message"]
    assert "mode 0o600 lets only its owner in" in out["message"]
    assert repr(ch.region.segment) in out["message"]
    assert (out["mode"], out["owner_uid"]) == (0o600, 0)


def test_read_only_mode_says_it_is_the_mode(
        make_channel: Callable[..., shmring.Channel], uname: str) -> None:
    make_channel(mode=0o644, supervised=False)
    out = as_nobody(_refusal(uname))
    assert out.get("kind") == "PermissionDenied", out
    assert "has mode 0o644 (owner uid 0)" in out["message"]
    assert f"does not let uid {NOBODY} read and write it" in out["message"]
    assert (out["mode"], out["owner_uid"]) == (0o644, 0)


def test_mode_0o666_lets_another_user_send_and_receive(
        make_channel: Callable[..., shmring.Channel], uname: str, umask_022: None) -> None:
    ch = make_channel("mpmc", mode=0o666, supervised=False)
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"to nobody")

    def use(out: dict[str, Any]) -> None:
        with shmring.Channel.open(uname, timeout=0.5, supervised=False) as theirs:
            out["got"] = theirs.consumer().recv(timeout=5).decode()
            theirs.producer().send(b"from nobody")
            try:
                theirs.unlink()  # /dev/shm is sticky: only the owner removes
            except shmring.PermissionDenied as e:
                out["unlink"] = str(e)

    out = as_nobody(use)
    assert out.get("got") == "to nobody", out
    assert rx.recv(timeout=5) == b"from nobody"
    assert "belongs to uid 0 (mode 0o666): only its owner can remove it" in out["unlink"]
    assert os.path.exists(_file(ch))


def test_another_users_supervised_open_fails_cleanly(
        make_channel: Callable[..., shmring.Channel], uname: str) -> None:
    """With ``SHMRING_SUPERVISOR`` unset, the other user's client goes to its
    own supervisor (one per user, docs/design.md "Supervisor"), starting it
    if needed. Where it cannot be started (here: this interpreter is not
    executable by nobody) that is a SupervisorUnavailable saying what to do,
    with the cause chained, not a raw PermissionError from ``Popen``."""
    make_channel("mpmc", mode=0o666, supervised=False)
    sockets = tempfile.mkdtemp(prefix="shmr-nb-")
    os.chown(sockets, NOBODY, NOBODY)

    def open_supervised(out: dict[str, Any]) -> None:
        out["can_exec"] = os.access(os.path.realpath(sys.executable), os.X_OK)
        try:
            shmring.Channel.open(uname, timeout=0.5).close()
            out["kind"] = "opened"
        except shmring.SupervisorUnavailable as e:
            out.update(kind="SupervisorUnavailable", message=str(e),
                       cause=type(e.__cause__).__name__)

    try:
        out = as_nobody(open_supervised, {"SHMRING_SOCKET_DIR": sockets,
                                          "SHMRING_SUPERVISOR_IDLE": "0.3"})
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    if out.get("can_exec"):
        assert out.get("kind") == "opened", out
        return
    assert out.get("kind") == "SupervisorUnavailable", out
    assert out["cause"] == "PermissionError"
    assert "cannot start a supervisor" in out["message"]
    assert "shmring supervisor" in out["message"]
    assert "SHMRING_SUPERVISOR=0" in out["message"]
