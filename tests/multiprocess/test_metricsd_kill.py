"""examples/metricsd's daemon SIGKILLed while workers count, and at chosen
steps of a fold, then started again under the same region name: the
totals are exact (the daemon holds no counts; the region does)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from metrics_util import (
    KILL,
    Daemon,
    check,
    exit_codes,
    fork_workers,
    jobs,
    namespace_env,
    runs,
    unlink,
    wait_for,
)


@pytest.fixture
def ns_env() -> Iterator[dict[str, str]]:
    yield from namespace_env()


def test_the_daemon_killed_and_restarted_loses_nothing(ns_env: dict[str, str]) -> None:
    d = Daemon(ns_env)
    slow = [["--jobs", "150", "--sleep", "0.004"], ["--jobs", "150", "--sleep", "0.004"],
            ["--jobs", "150", "--sleep", "0.004", "--die-after", "60"]]
    procs = fork_workers(ns_env, slow, parallel=3)
    try:
        assert wait_for(lambda: jobs(d.scrape()) >= 50, timeout=60)
        d.kill()  # while the workers count (and one of them dies)
        assert d.proc.returncode == KILL
        assert exit_codes(procs) == [0, 0, KILL]
        d = Daemon(ns_env)  # the same region name, a new port
        check(d.scrape(), 150 + 150 + 60)
        d.kill()
        d = Daemon(ns_env)
        check(d.scrape(), 360)
    finally:
        if procs.poll() is None:
            procs.kill()
        d.stop()
        unlink(ns_env)


@pytest.mark.parametrize("step", ["adding", "committed", "zeroed"])
def test_the_daemon_killed_in_a_fold_and_restarted(ns_env: dict[str, str], step: str) -> None:
    # Three dead workers, not yet folded (no daemon runs), then a daemon
    # whose first fold SIGKILLs it at ``step`` (every step of a fold is
    # killed in tests/multiprocess/test_metrics_fold.py).
    assert exit_codes(fork_workers(ns_env, runs((100, 7), (100, 11), (100, 13)))) == [KILL] * 3
    d = Daemon(ns_env, "--crash-at", step)
    try:
        d.proc.wait(60)
        assert d.proc.returncode == KILL
        err = d.proc.stderr.read() if d.proc.stderr else ""
        assert f"--crash-at {step}" in err
        d = Daemon(ns_env)
        s = d.scrape()
        check(s, 7 + 11 + 13)
        assert s[("shmring_metrics_folded_total", ())] == 3
    finally:
        d.stop()
        unlink(ns_env)
