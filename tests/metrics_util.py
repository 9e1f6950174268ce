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

from prometheus_client.parser import text_string_to_metric_families

from shmring.metrics import Registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "metricsd"
METRICSD = EXAMPLE / "metricsd.py"
WORKER = EXAMPLE / "worker.py"
_count = itertools.count()

#: (sample name, sorted label items) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


KILL = -signal.SIGKILL


def jobs(s: Samples) -> int:
    return int(sum(v for (name, _labels), v in s.items() if name == "jobs_total"))


def check(s: Samples, expect: int) -> None:
    """The daemon's totals of ``expect`` jobs, every process gone."""
    assert jobs(s) == expect
    assert s[("job_seconds_count", ())] == expect
    assert s[("job_seconds_bucket", (("le", "+Inf"),))] == expect
    assert s[("jobs_in_progress", ())] == 0
    assert s[("shmring_metrics_processes", ())] == 0


def runs(*specs: tuple[int, int]) -> list[list[str]]:
    """worker.py arguments: (jobs, die after) each; 0: do not die."""
    return [["--jobs", str(n), "--sleep", "0", "--seed", str(i)]
            + (["--die-after", str(k)] if k else []) for i, (n, k) in enumerate(specs)]


def mname() -> str:
    """A metrics region name unique to this test process."""
    return f"m-{os.getpid()}-{next(_count)}"


def registries() -> Iterator[Callable[..., Registry]]:
    """The body of a ``make_registry`` fixture: ``make_registry(**kw)`` is a
    new Registry (region named by ``mname``), unlinked and closed at the
    end of the test."""
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


def namespace_env() -> Iterator[dict[str, str]]:
    """The body of an ``ns_env`` fixture: an environment with a namespace
    of this test's own; its segments are removed at the end."""
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


_FORKER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import worker
runs, parallel = json.loads(sys.argv[2]), int(sys.argv[3])
codes = []
for at in range(0, len(runs), parallel):
    pids = []
    for args in runs[at:at + parallel]:
        pid = os.fork()
        if pid == 0:
            import io, contextlib
            with contextlib.redirect_stdout(io.StringIO()):
                rc = worker.main(args)
            os._exit(rc)
        pids.append(pid)
    for pid in pids:
        codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes))
"""


def fork_workers(env: dict[str, str], runs: list[list[str]],
                 parallel: int = 1) -> subprocess.Popen[str]:
    """One process that forks a worker.py (its ``main``) for each of
    ``runs`` (argument lists), ``parallel`` at a time: many short-lived
    workers without an interpreter start each. Prints their exit codes."""
    return subprocess.Popen([sys.executable, "-c", _FORKER, str(EXAMPLE), json.dumps(runs),
                             str(parallel)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def exit_codes(proc: subprocess.Popen[str], timeout: float = 120) -> list[int]:
    """The exit codes ``fork_workers``' workers had."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


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
