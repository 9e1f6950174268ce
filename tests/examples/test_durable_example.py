"""examples/durable end to end, as its README says: the README's commands
run as written (from a directory laid out like the checkout's top, in a
namespace of the test's own): the producer, ``shmring record``, both killed
with SIGKILL mid-stream, ``shmring inspect`` and ``cat`` of what is left,
then the checker and ``shmring replay --create``. The journal must be the
producer's events 0..N-1, whole and in order; the replay must give the
checker exactly those N events.
"""

from __future__ import annotations

import importlib
import re
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from journal_cli_util import ROOT, Proc, journal_records, namespace_env, procs
from namespace_util import wait_for

from shmring._journal import decode_obj

EXAMPLE = ROOT / "examples" / "durable"
README = EXAMPLE / "README.md"
sys.path.insert(0, str(EXAMPLE))
event = importlib.import_module("producer").event  # the example's own module


def commands() -> list[str]:
    """The command lines of the README's ```bash blocks, comments cut."""
    out, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside and (cmd := line.split("  #")[0].strip()):
            out.append(cmd)
    return out


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    with namespace_env() as e:
        yield e


@pytest.fixture
def top(tmp_path: Path) -> Path:
    """A directory that looks like the checkout's top (examples/ in it), so
    the journal the README's commands make lands in the test's own place."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def test_the_readme_lists_the_whole_story() -> None:
    cmds = commands()
    assert [c.split()[:2] for c in cmds] == [
        ["python", "examples/durable/producer.py"], ["shmring", "record"],
        ["kill", "-KILL"], ["shmring", "inspect"], ["shmring", "cat"],
        ["python", "examples/durable/check.py"], ["shmring", "replay"], ["rm", "-r"]]
    kill = cmds[2]
    assert "examples/durable/producer.py" in kill and "shmring record events" in kill


def test_record_kill_everything_replay(env: dict[str, str], top: Path) -> None:
    produce, record, kill, inspect, cat, check, replay, remove = commands()
    del kill  # the test kills its own two processes by pid, as that line does by name
    journal = top / "events.journal"
    with procs() as ps:
        ps.append(prod := Proc(shlex.split(produce), env, cwd=top))
        assert prod.line() == "waiting for a consumer of 'events'"
        ps.append(rec := Proc(shlex.split(record), env, cwd=top))
        assert rec.line().startswith("recording channel 'events' (broadcast)")
        prod.until("sent 3000")
        wait_for("3,000 records", lambda: len(journal_records(journal)) >= 3000)
        for p in (rec, prod):
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait(30)
        assert (rec.proc.returncode, prod.proc.returncode) == (-9, -9)

    got = journal_records(journal)
    n = len(got)
    assert 3000 <= n < 100_000
    assert [s for s, _ in got] == list(range(n))
    for seq, data in got:
        ev = decode_obj(data)
        want = event(seq)
        assert (ev["seq"], ev["sensor"], ev["value"]) == (seq, want["sensor"], want["value"])

    with procs() as ps:
        ps.append(p := Proc(shlex.split(inspect), env, cwd=top))
        out, _ = p.finish()
        assert f"seq 0..{n - 1} ({n:,} records)" in out and "durable point:" in out
        ps.append(p := Proc(shlex.split(cat), env, cwd=top))
        out, _ = p.finish()
        lines = out.splitlines()
        assert len(lines) == 3
        for i, line in enumerate(lines):
            assert re.match(rf"{i}\t\d+\tobj\t\{{'seq': {i}, 'time': ", line), line

        ps.append(chk := Proc(shlex.split(check), env, cwd=top))
        ps.append(rp := Proc(shlex.split(replay), env, cwd=top))
        out, _ = rp.finish()
        assert f"replayed {n:,} records" in out and "'events-replay' (spsc)" in out, out
        out, _ = chk.finish()
        assert out == f"received {n} events: seq 0..{n - 1} in order, none missing, " \
            "each as sent\n"

        ps.append(p := Proc(shlex.split(remove), env, cwd=top))
        p.finish()
    assert not journal.exists()
