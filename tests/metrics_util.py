"""Helpers of the shmring.metrics tests: unique region names and
namespaces, registries removed at the end of a test, and metricsd run as a
program (started, scraped over real HTTP, stopped).

Names carry ``-<pid>-`` so that the leak check of conftest.py sees them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shmring.metrics import Registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "metricsd"
METRICSD = EXAMPLE / "metricsd.py"
WORKER = EXAMPLE / "worker.py"
_count = itertools.count()

#: (sample name, sorted label items) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def mname() -> str:
    """A metrics region name unique to this test process."""
    return f"m-{os.getpid()}-{next(_count)}"


@pytest.fixture
def make_registry() -> Iterator[Callable[..., Registry]]:
    """``make_registry(**kw)``: a new Registry (region named by ``mname``),
    unlinked and closed at the end of the test."""
    made: list[Registry] = []

    def make(name: str | None = None, **kw: Any) -> Registry:
        reg = Registry(name or mname(), **kw)
        made.append(reg)
        return reg

    yield make
    for reg in made:
        with contextlib.suppress(Exception):
            reg.unlink()
        reg.close()


@pytest.fixture
def ns_env() -> Iterator[dict[str, str]]:
    """An environment with a namespace of this test's own; its segments are
    removed (and must be removable) at the end."""
    ns = f"mt-{os.getpid()}-{next(_count)}"
    env = dict(os.environ, SHMRING_NAMESPACE=ns, SHMRING_SUPERVISOR_IDLE="1",
               PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    yield env
    for e in os.listdir("/dev/shm"):
        if e.startswith(f"shmring.{ns}."):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{e}")


class Daemon:
    """metricsd ``run --port 0`` as a separate process."""

    def __init__(self, env: dict[str, str], *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(METRICSD), "run", "--port", "0", "--fold-every", "0.2", *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        if m is None:
            self.proc.kill()
            _out, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"metricsd did not start: {line!r} {err}")
        self.port = int(m.group(1))

    def scrape(self) -> Samples:
        """GET /metrics over HTTP, parsed."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            assert r.status == 200
            text = r.read().decode()
        return parse(text)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=30)
        return self.proc.returncode


def parse(text: str) -> Samples:
    """Prometheus text, as prometheus_client's parser reads it."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """examples/metricsd/worker.py with ``args``, started."""
    return subprocess.Popen([sys.executable, str(WORKER), "--json", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any] | None:
    """Wait for a worker: what it printed (None if it was SIGKILLed)."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode == -signal.SIGKILL:
        return None
    assert proc.returncode == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def status(env: dict[str, str]) -> dict[str, Any]:
    """``metricsd status --json``, parsed."""
    done = subprocess.run([sys.executable, str(METRICSD), "status", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def unlink(env: dict[str, str]) -> None:
    """``metricsd unlink``: remove the region."""
    subprocess.run([sys.executable, str(METRICSD), "unlink"], env=env, capture_output=True,
                   timeout=60, check=False)


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``cond`` until true (bounded); its last value."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
