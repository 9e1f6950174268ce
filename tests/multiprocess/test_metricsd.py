"""examples/metricsd as programs: the daemon serving real HTTP, workers
(examples/metricsd/worker.py) counting concurrently, SIGKILLed, and dying by
the dozen, and ``status --json``. Totals must be exact every time. (The
daemon itself SIGKILLed: test_metricsd_kill.py.)

Most workers are forked from one process that imported worker.py once
(``fork_workers``): an interpreter start per short-lived worker would cost
more than the test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from metrics_util import (
    KILL,
    METRICSD,
    Daemon,
    check,
    exit_codes,
    finish,
    fork_workers,
    namespace_env,
    runs,
    status,
    unlink,
    worker,
)

from shmring.metrics import Registry


def test_concurrent_workers_exact_over_http(ns_env: dict[str, str]) -> None:
    d = Daemon(ns_env)
    try:
        own = worker(ns_env, "--jobs", "3000", "--sleep", "0")  # a program of its own
        forked = fork_workers(ns_env, runs((3000, 0), (3000, 0), (3000, 1234), (3000, 2)),
                              parallel=4)
        out = finish(own)
        assert out is not None and out["jobs"] == 3000
        assert exit_codes(forked) == [0, 0, KILL, KILL]
        s = d.scrape()
        check(s, 9000 + 1234 + 2)
        assert s[("shmring_metrics_folded_total", ())] == 5
    finally:
        assert d.stop() == 0
        unlink(ns_env)


@pytest.fixture
def ns_env() -> Iterator[dict[str, str]]:
    yield from namespace_env()


def test_many_short_lived_workers_do_not_pile_up(ns_env: dict[str, str]) -> None:
    # A region of 3 slabs for 30 workers: each dead one's slab must be reused.
    Registry(slabs=3, namespace=ns_env["SHMRING_NAMESPACE"]).close()
    d = Daemon(ns_env)
    try:
        specs = [(40, 0 if k % 3 == 0 else 5 + k) for k in range(30)]
        assert exit_codes(fork_workers(ns_env, runs(*specs), parallel=3)) == [
            0 if k == 0 else KILL for _n, k in specs]
        check(d.scrape(), sum(k or n for n, k in specs))
        st = status(ns_env)
        assert (st["slabs"], st["processes"], st["folded"]) == (3, 0, 30)
    finally:
        assert d.stop() == 0
        unlink(ns_env)


def test_status_json_and_a_second_daemon(ns_env: dict[str, str]) -> None:
    assert status(ns_env) == {"name": "metrics", "exists": False}
    d = Daemon(ns_env)
    try:
        assert exit_codes(fork_workers(ns_env, runs((5, 0)))) == [0]
        st: dict[str, Any] = status(ns_env)
        assert st["exists"] and st["daemon"]["alive"] and st["daemon"]["port"] == d.port
        assert st["daemon"]["pid"] == d.proc.pid
        assert {f["name"]: f["kind"] for f in st["families"]} == {
            "jobs": "counter", "jobs_in_progress": "gauge", "job_seconds": "histogram"}
        assert st["metrics"] == 3 and st["processes"] == 0 and st["folded"] == 1
        second = subprocess.run([sys.executable, str(METRICSD), "run", "--port", "0"],
                                env=ns_env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"served by pid {d.proc.pid} (port {d.port})" in second.stderr
        human = subprocess.run([sys.executable, str(METRICSD), "status"], env=ns_env,
                               capture_output=True, text=True, timeout=60)
        assert f"daemon pid {d.proc.pid} on port {d.port}" in human.stdout
    finally:
        assert d.stop() == 0  # SIGTERM: a clean exit, and the daemon role given back
    assert status(ns_env)["daemon"] is None
    unlink(ns_env)
    assert status(ns_env)["exists"] is False
