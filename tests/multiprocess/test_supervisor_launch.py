"""Auto-start where ``sys.executable`` is not a Python interpreter (an
embedded or frozen application): the client finds a Python that can run the
supervisor, or fails at once saying what to set, instead of waiting 15 s.

Each client is a fresh interpreter that pretends to be embedded (its
``sys.executable`` names another program), in a namespace and socket
directory of its own, so the supervisor it starts is a real one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
from supervisor_util import lock_held, wait_for

from shmring._supervisor import instance

CLIENT = """
import json, os, sys, time
sys.executable = sys.argv[1]          # as an embedding application's binary
if sys.argv[2] == "no-base":
    sys._base_executable = sys.argv[1]
t0 = time.monotonic()
import shmring
out = {}
try:
    ch = shmring.Channel.create("launch", capacity=4096)
    out["ok"] = ch._supervisor.supervisor_pid
    ch.close()
except shmring.SupervisorUnavailable as e:
    out["error"] = str(e)
out["took"] = time.monotonic() - t0
print(json.dumps(out))
"""


@pytest.fixture
def where() -> Iterator[dict[str, str]]:
    """A namespace and socket directory nobody else uses."""
    d = tempfile.mkdtemp(prefix="shmr-l-")
    ns = f"launch{os.getpid()}x{time.monotonic_ns() % 10**6}"
    env = dict(os.environ, SHMRING_SOCKET_DIR=d, SHMRING_NAMESPACE=ns,
               SHMRING_SUPERVISOR_IDLE="0.3")
    env.pop("SHMRING_PYTHON", None)
    yield env
    wait_for(lambda: not lock_held(os.path.join(d, f"{ns}.lock")), 15, "the supervisor to go")
    instance.remove_stale(ns)
    shutil.rmtree(d, ignore_errors=True)


def _run(env: dict[str, str], exe: str, base: str = "base") -> dict[str, object]:
    r = subprocess.run([sys.executable, "-c", CLIENT, exe, base], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture
def python_on_path() -> Iterator[str]:
    """A directory holding ``python3``: this test's interpreter (a wrapper, as
    a venv's python found through another path would not be the venv)."""
    bindir = tempfile.mkdtemp(prefix="shmr-bin-")
    wrapper = os.path.join(bindir, "python3")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    os.chmod(wrapper, 0o755)
    yield bindir
    shutil.rmtree(bindir, ignore_errors=True)


@pytest.mark.parametrize("base", ["base", "no-base"])
def test_an_embedded_application_finds_a_python_that_can(where: dict[str, str],
                                                         python_on_path: str,
                                                         base: str) -> None:
    # sys.executable is the application's binary; the venv's base Python (or
    # none) cannot import the venv's packages; a python3 on PATH can.
    out = _run(dict(where, PATH=python_on_path), "/usr/bin/env", base)
    assert isinstance(out.get("ok"), int), out


def test_no_python_at_all_fails_at_once_saying_what_to_set(where: dict[str, str]) -> None:
    env = dict(where, PATH="/nonexistent")
    out = _run(env, "/usr/bin/env", "no-base")
    assert "SHMRING_PYTHON" in str(out.get("error")), out
    assert "not a Python interpreter" in str(out["error"])
    assert float(str(out["took"])) < 5.0  # not the 15 s connect timeout


def test_a_python_that_cannot_run_it_fails_at_once(where: dict[str, str]) -> None:
    env = dict(where, SHMRING_PYTHON="/bin/false")
    out = _run(env, sys.executable)
    assert "exited with status 1" in str(out.get("error")), out
    assert float(str(out["took"])) < 5.0


def test_shmring_python_is_used_as_given(where: dict[str, str]) -> None:
    env = dict(where, SHMRING_PYTHON=sys.executable)
    out = _run(env, "/usr/bin/env", "no-base")
    assert isinstance(out.get("ok"), int), out
