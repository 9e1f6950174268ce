"""Fixtures every test shares: unique names, a check that nothing leaks
into /dev/shm, and the two factories tests build on: ``make_channel`` for
channels and ``make_queue`` (also ``make``) for queues, both named after the
test and closed, removed and checked gone at its end."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from queue_util import segments, wait_gone

import shmring
from shmring._supervisor import instance

# Fixtures that live with their helpers: the channel contract's (``kind``,
# ``make``), the supervisor tests' (``env``, ``sup``) and the logsink tests'
# (``ns``).
pytest_plugins = ["channel_util", "logsink_util", "pipeline_util", "supervisor_util"]

SHM = "/dev/shm"

# One supervisor serves a user's namespace, whichever socket directory a
# client would pick (the instance guard in /dev/shm): a test run shares no
# namespace, so no supervisor, with other runs or other xdist workers. Tests
# that want their own supervisor take a namespace of their own too
# (supervisor_util's ``env``).
# (An xdist worker inherits its controller's choice and makes its own.)
if os.environ.get("SHMRING_NAMESPACE", "") == os.environ.get("_SHMRING_TEST_NAMESPACE", ""):
    os.environ["SHMRING_NAMESPACE"] = os.environ["_SHMRING_TEST_NAMESPACE"] = (
        f"t{os.environ.get('PYTEST_XDIST_WORKER', 'gw')}-{os.getpid()}")


# Tests that type Ctrl-C play a terminal's foreground job, which a shell
# starts with SIGINT at its default. A runner started in the background by a
# non-interactive shell (`cmd &`, nohup) has SIGINT ignored, Python keeps it
# so at start-up, and every command a test starts would inherit it and
# ignore the Ctrl-C. Give this process (an xdist worker too) Python's own
# handler, so the children start as they would from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def no_leaked_segments(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test that leaves a new entry in /dev/shm."""
    before = _shm_entries()
    yield
    leaked = _shm_entries() - before
    from supervisor_util import lock_held  # a plugin (below): imported once registered
    # A running supervisor's instance guard is not a leak: it goes when that
    # supervisor exits (idle). One nobody holds is (a SIGKILLed supervisor's).
    leaked = {e for e in leaked if not e.startswith(instance.PREFIX)
              or (os.path.exists(os.path.join(SHM, e)) and not lock_held(os.path.join(SHM, e)))}
    # Only names made by this test process count (they carry its pid, see
    # `uname`): other workers and other test runs create their own meanwhile.
    mine = {e for e in leaked if f"-{os.getpid()}-" in e}
    if mine:
        for e in mine:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(SHM, e))
        pytest.fail(f"test leaked shared-memory segments: {sorted(mine)}")


#: Dispositions a test must leave as it found them: every process the rest of
#: the run starts inherits an ignored or blocked signal (an ignored SIGINT
#: stays ignored across exec), and then a later test's Ctrl-C does nothing.
_GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE)


def _kernel_signal_state() -> tuple[str, ...]:
    """The calling thread's ignored and blocked sets as the kernel has them
    (C code can change them behind Python's back)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return tuple(f"{k}={fields[k].strip()}" for k in ("SigIgn", "SigBlk"))


@pytest.fixture(autouse=True)
def signals_restored() -> Iterator[None]:
    """Fail any test that leaves a signal handler, the ignored set or the
    signal mask changed (and put them back for the tests after it)."""
    handlers = [signal.getsignal(s) for s in _GUARDED_SIGNALS]
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    before = (handlers, _kernel_signal_state())
    yield
    after = ([signal.getsignal(s) for s in _GUARDED_SIGNALS], _kernel_signal_state())
    if after != before:
        for s, h in zip(_GUARDED_SIGNALS, handlers, strict=True):
            signal.signal(s, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        pytest.fail(f"test changed signal handling: {before} -> {after}")


@pytest.fixture
def uname(request: pytest.FixtureRequest) -> str:
    """A channel name unique to this test and xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    test = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:80]
    return f"t-{worker}-{os.getpid()}-{test}"


@pytest.fixture
def make_channel(uname: str) -> Iterator[Callable[..., shmring.Channel]]:
    """Build channels: ``make_channel(pattern="spsc", capacity=4096, **kw)``
    is ``Channel.create`` named after the test (``name=`` to choose another,
    ``suffix=`` to add to it); every channel made is closed and unlinked at
    the end of the test, and its segment must then be gone."""
    made: list[shmring.Channel] = []

    def create(pattern: str = "spsc", capacity: int = 4096, *, name: str | None = None,
               suffix: str = "", **kw: Any) -> shmring.Channel:
        ch = shmring.Channel.create((uname if name is None else name) + suffix,
                                    capacity=capacity, pattern=pattern, **kw)
        made.append(ch)
        return ch

    yield create
    for ch in made:
        try:
            ch.close()
        finally:
            ch.unlink()
    left = [ch.region.segment for ch in made
            if os.path.exists(SHM + ch.region.segment)]
    assert not left, f"segments outlived their channels: {left}"


@pytest.fixture
def make_queue(uname: str) -> Iterator[Callable[..., Any]]:
    """Build queues named after the test; close them and wait (bounded) for
    their regions to go once the test is done."""
    made: list[Any] = []
    counter = itertools.count()

    def build(cls: type = shmring.Queue, *args: Any, **kw: Any) -> Any:
        q = cls(*args, name=f"{uname}-{next(counter)}", **kw)
        made.append(q)
        return q

    yield build
    for q in made:
        q.close()
    for q in made:
        assert wait_gone(segments(q)), f"{q!r} outlived its last holder"
