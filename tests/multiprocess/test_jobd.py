"""jobd with real processes: jobs from several clients come back exactly once
while workers are SIGKILLed and replaced; a poison job ends in the dead
letters after exactly --max-tries attempts; jobd SIGKILLed and started again
under the same name keeps the promises of examples/jobd/README.md."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from jobd_util import JOBD, Jobs, client_json, fresh_jobs

import shmring

N_JOBS = 30  # per client, three clients
KILLS = 4


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    """jobd's processes of this test, in a namespace of its own."""
    yield from fresh_jobs()


def _submit(jobs: Jobs, task: str, arg: object) -> int:
    return jobs.client().submit({"op": "submit", "job": {"task": task, "arg": arg}})


def test_jobs_come_back_once_while_workers_are_killed(jobs: Jobs) -> None:
    rng = random.Random(12)
    jobs.jobd("--max-tries", "20")
    workers = [jobs.worker("--slow", "0.05") for _ in range(3)]
    jobs.workers(3)
    clients = [subprocess.Popen(
        [sys.executable, str(JOBD / "client.py"), "--json", "--timeout", "60", "square",
         *(str(k * 1000 + i) for i in range(N_JOBS))],
        env=jobs.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(3)]
    killed = 0
    try:
        while killed < KILLS and any(c.poll() is None for c in clients):
            st = jobs.status()
            busy = [w["pid"] for w in st["workers"] if w["busy"]]
            live = [w for w in workers if w.poll() is None and w.pid in busy]
            if not live:
                time.sleep(0.01)
                continue
            workers.append(jobs.worker("--slow", "0.05"))  # its replacement
            victim = rng.choice(live)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            killed += 1
            time.sleep(rng.uniform(0.0, 0.1))
        outs = [c.communicate(timeout=60) for c in clients]
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.communicate()
    assert killed == KILLS
    for k, (c, (out, err)) in enumerate(zip(clients, outs, strict=True)):
        assert c.returncode == 0, err
        got = client_json(subprocess.CompletedProcess(c.args, 0, out, err))
        assert [r["arg"] for r in got["results"]] == [k * 1000 + i for i in range(N_JOBS)]
        assert all(r["ok"] and r["value"] == r["arg"] ** 2 for r in got["results"]), got
        assert got["stray"] == 0, "a result came back twice"
    st = jobs.wait_for("all done", lambda s: s["done"] == 3 * N_JOBS)
    assert st["submitted"] == 3 * N_JOBS and st["dead_letters"] == [] and st["failed"] == 0
    assert 1 <= st["retried"] <= killed
    assert st["queued"] == 0 and st["in_flight"] == 0


def test_a_poison_job_is_a_dead_letter_after_max_tries(jobs: Jobs) -> None:
    """The poison job SIGKILLs whichever worker runs it: three attempts, three
    dead workers, then a dead letter; a fourth worker does the rest."""
    jobs.jobd("--max-tries", "3")
    for _ in range(4):
        jobs.worker()
    jobs.workers(4)
    bad = _submit(jobs, "crash", 7)
    good = [_submit(jobs, "square", i) for i in range(20)]
    client = jobs.client()
    with pytest.raises(shmring.RemoteError, match="moved to the dead letters after 3 tries") as e:
        client.result(bad, timeout=60)
    assert e.value.item == {"task": "crash", "arg": 7}
    assert [client.result(i, timeout=30) for i in good] == [i * i for i in range(20)]
    st = jobs.status()
    (letter,) = st["dead_letters"]
    assert letter["attempts"] == 3 and letter["job"] == {"task": "crash", "arg": 7}
    assert letter["id"] == bad and letter["client"] == client.reply_to
    died = [p for p in jobs.procs if p.poll() is not None]
    assert sorted(letter["workers"]) == sorted(p.pid for p in died)
    assert all(p.returncode == -signal.SIGKILL for p in died) and len(died) == 3
    assert st["done"] == 20 and st["retried"] == 2 and len(st["workers"]) == 1


def test_jobd_killed_and_restarted_keeps_what_the_readme_says(jobs: Jobs) -> None:
    first = jobs.jobd()
    jobs.worker("--slow", "0.6")
    jobs.workers(1)
    client = jobs.client()
    running = _submit(jobs, "square", 1)  # given to the worker at once
    queued = [_submit(jobs, "square", x) for x in (2, 3, 4)]  # wait inside jobd
    jobs.wait_for("one running, three queued",
                  lambda s: s["in_flight"] == 1 and s["queued"] == 3)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # Sent while no jobd runs: they wait in the request ring.
    waiting = [_submit(jobs, "square", x) for x in (5, 6)]
    jobs.jobd()  # the same name, again
    # The running job finished and its worker reported it to the new jobd.
    assert client.result(running, timeout=30) == 1
    assert [client.result(i, timeout=30) for i in waiting] == [25, 36]
    # Jobs the killed jobd held in memory are lost: their clients time out.
    for rid in queued:
        with pytest.raises(shmring.Timeout, match="server attached"):
            client.result(rid, timeout=0.5)
    st = jobs.status()
    assert (st["forwarded"], st["done"], st["submitted"]) == (1, 3, 2)
    assert [w["busy"] for w in st["workers"]] == [False]
