"""examples/bridge end to end, as its README says: the README's commands
run as written (with bash, from the top of the checkout): host b's bridge,
its producer, a worker on each "host", then the bridges stopped. Between
them the workers must have done every job exactly once, and nothing of
either namespace may be left in /dev/shm."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from namespace_util import wait_gone

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "examples" / "bridge" / "README.md"
COUNT = 20000


def commands() -> list[str]:
    """The command lines of the README's ```bash blocks."""
    out, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside and line.strip():
            out.append(line.strip())
    return out


def _start(cmd: str, env: dict[str, str]) -> subprocess.Popen[str]:
    # bash runs a lone command in its own process (no fork): signals reach it.
    return subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_workers_on_two_hosts_share_the_jobs_exactly_once() -> None:
    bridge_b, produce, remote, local, stop = commands()
    assert f"--count {COUNT}" in produce
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               SHMRING_SUPERVISOR_IDLE="1", PYTHONUNBUFFERED="1")
    env.pop("SHMRING_NAMESPACE", None)
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(bb := _start(bridge_b, env))
        assert bb.stdout is not None
        assert bb.stdout.readline() == "shmring bridge: listening on tcp://127.0.0.1:7470\n"
        assert bb.stdout.readline().startswith("shmring bridge: namespace 'hostb'")
        procs.append(prod := _start(produce, env))
        assert prod.stdout is not None
        assert prod.stdout.readline().startswith("waiting for 2 consumers")
        procs.append(wa := _start(remote, env))
        procs.append(wb := _start(local, env))
        outs = []
        for w in (wa, wb):
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
            outs.append(out)
        out, err = prod.communicate(timeout=60)
        assert prod.returncode == 0, err
        assert f"sent {COUNT} jobs" in out
        said = [re.fullmatch(r"worker did (\d+) jobs, (\d+) distinct, id sum (\d+)\n", o)
                for o in outs]
        done = [tuple(map(int, m.groups())) if m else (-1, -2, -3) for m in said]
        assert all(n == distinct for n, distinct, _ in done), done
        assert sum(n for n, _, _ in done) == COUNT
        assert sum(s for _, _, s in done) == COUNT * (COUNT - 1) // 2
        assert done[0][0] > 0, "the remote worker got no work"
        r = subprocess.run(["bash", "-c", stop], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        bb.send_signal(signal.SIGINT)  # Ctrl-C
        bb.wait(30)
        assert bb.returncode == 0
    finally:
        subprocess.run(["bash", "-c", stop], cwd=ROOT, env=env, capture_output=True, timeout=60)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert wait_gone("hosta") == [] and wait_gone("hostb") == []
