"""examples/feedd end to end, with real processes: feedd publishing, late
subscribers checked exactly against the ticks replayed from seq 1, a slow
lossy subscriber whose missed count is checked against what it did not
see, and feedd SIGKILLed and restarted under the same name while
subscribers keep going."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import signal
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
from feed_util import (
    FEEDD,
    SUBSCRIBE,
    Program,
    Truth,
    check_joined,
    feed,
    feedd,
    namespace_env,
    programs,
    read_record,
    status,
)
from namespace_util import wait_for

import shmring

STARTED = re.compile(r"feedd: (started|resumed) 'ticks' at seq (\d+) \(generation (\d+), pid")


@pytest.fixture
def fenv() -> Iterator[dict[str, str]]:
    """A namespace of this test's own; nothing of it may be left at the end."""
    with namespace_env() as env:
        yield env


def feedd_run(env: dict[str, str], *args: str) -> tuple[Program, int, int]:
    """Start ``feedd.py run``; (program, seq it starts from, generation)."""
    p = Program(env, FEEDD, "run", *args)
    m = STARTED.match(p.line())
    assert m, p.lines
    return p, int(m.group(2)), int(m.group(3))


def live(env: dict[str, str]) -> dict[str, Any]:
    """``status`` as feedd.py computes it, run in this process (faster than
    the command, which ``status`` of feed_util runs)."""
    st: dict[str, Any] = feedd.status("ticks", env["SHMRING_NAMESPACE"])
    return st


def seq_at_least(env: dict[str, str], n: int) -> Any:
    """A condition: status shows a live publisher past seq ``n``."""
    def cond() -> dict[str, Any] | None:
        st = live(env)
        return st if st["running"] and st["seq"] >= n else None
    return cond


def subscribers(env: dict[str, str], n: int) -> Any:
    """A condition: status shows ``n`` subscribers."""
    def cond() -> dict[str, Any] | None:
        st = live(env)
        return st if len(st["subscribers"]) == n else None
    return cond


def test_late_subscribers_get_the_state_at_their_seq_then_every_update(
        fenv: dict[str, str], tmp_path: Path) -> None:
    count = 3000
    with programs() as progs:
        pub, start, gen = feedd_run(fenv, "--rate", "3000", "--keys", "40", "--seed", "11")
        progs.append(pub)
        assert (start, gen) == (0, 1)
        records = []
        for i, after in enumerate((1500, 6000)):
            wait_for("feedd going", seq_at_least(fenv, after))
            rec = tmp_path / f"late{i}.jsonl"
            progs.append(Program(fenv, SUBSCRIBE, "--count", str(count), "--record", str(rec),
                                 "--quiet", "--json"))
            records.append(rec)
        for p in progs[1:]:
            p.finish()
        st = status(fenv)
        truth = Truth(11, 40, st["seq"] + 10_000)
        joined = [check_joined(truth, head, ups, head["snapshot_seq"] + count)
                  for head, ups in map(read_record, records)]
        assert joined[0] >= 1500 and joined[1] >= 6000, joined
        # The publisher's own full state, read from its snapshot once it has
        # stopped: the same as the replay.
        assert st["running"] and st["pid"] == pub.pid and st["keys"] == 40
        assert st["subscribers"] == []
        snap = feed.Snapshot.open("ticks", namespace=fenv["SHMRING_NAMESPACE"])
        try:
            pub.stop()
            assert snap.sent_seq == snap.last_seq >= st["seq"]
            assert snap.read() == truth.state_at(snap.last_seq)
        finally:
            snap.close()


def test_a_subscriber_joining_a_flat_out_feed_folds_in_what_its_slot_reads_missed(
        fenv: dict[str, str]) -> None:
    """Joins while feedd publishes as fast as it can over many keys, in this
    process: each join's state is exact at its seq, and the updates after
    it come one by one."""
    last = 60_000
    ns = fenv["SHMRING_NAMESPACE"]
    with programs() as progs:
        pub, _start, _gen = feedd_run(fenv, "--rate", "0", "--keys", "400", "--seed", "3",
                                      "--until", str(last))
        progs.append(pub)
        truth = Truth(3, 400, last)
        folded = []
        for _ in range(3):
            with feed.Subscriber("ticks", namespace=ns) as sub:
                s = sub.snapshot_seq
                assert {k: (sub.snapshot_seqs[k], v) for k, v in sub.snapshot.items()} == \
                    truth.state_at(s)
                for n in range(s + 1, min(s + 2000, last) + 1):
                    u = sub.recv(timeout=10)
                    assert (u.seq, u.key, u.value, u.gap) == (n, *truth.updates[n], 0)
                folded.append(sub.folded)
        print("updates folded in at each join:", folded)
        pub.stop()


def test_a_slow_lossy_subscriber_is_told_exactly_what_it_missed(
        fenv: dict[str, str], tmp_path: Path) -> None:
    last = 150_000
    rec = tmp_path / "lossy.jsonl"
    with programs() as progs:
        # The subscriber first: it waits for the feed, so it is there from
        # the start and falls behind for certain (--slow).
        sub = Program(fenv, SUBSCRIBE, "--lossy", "--slow", "0.0005", "--until", str(last),
                      "--record", str(rec), "--json", "--wait", "60")
        progs.append(sub)
        assert sub.line() == "waiting for feed 'ticks' to appear"
        pub, _start, _gen = feedd_run(fenv, "--rate", "0", "--keys", "10", "--seed", "5",
                                      "--until", str(last), "--capacity", "16384")
        progs.append(pub)
        _rc, out = sub.finish(60)
        summary = json.loads(out.splitlines()[-1])
        head, updates = read_record(rec)
        s = head["snapshot_seq"]
        seen = [u[0] for u in updates]
        assert seen == sorted(set(seen)) and seen[-1] == last
        # Every update it got is the publisher's, and each gap is exactly
        # the seqs it skipped.
        truth = Truth(5, 10, last)
        prev = s
        for seq, key, value, gap in updates:
            assert (key, value) == truth.updates[seq] and gap == seq - prev - 1, seq
            prev = seq
        not_seen = (last - s) - len(updates)
        assert not_seen > 0, "it never fell behind"
        assert summary["missed"] == not_seen == sum(u[3] for u in updates)
        assert summary["channel_missed"] == not_seen, summary   # Consumer.missed agrees
        assert summary["updates"] == len(updates) and summary["duplicates"] == 0
        print(f"lossy subscriber: {len(updates)} updates seen, {not_seen} missed")
        pub.stop()


def test_feedd_killed_and_restarted_resumes_and_subscribers_see_no_gap(
        fenv: dict[str, str], tmp_path: Path) -> None:
    args = ("--rate", "3000", "--keys", "30", "--seed", "7")
    with programs() as progs:
        pub, _start, _gen = feedd_run(fenv, *args)
        progs.append(pub)
        recs = {kind: tmp_path / f"{kind}.jsonl" for kind in ("lossless", "lossy")}
        subs = [Program(fenv, SUBSCRIBE, *(["--lossy"] if kind == "lossy" else []),
                        "--record", str(rec), "--json", "--quiet")
                for kind, rec in recs.items()]
        progs.extend(subs)
        st = wait_for("two subscribers", subscribers(fenv, 2))
        assert sorted(s["channel"] for s in st["subscribers"]) == ["lossless", "lossy"]
        assert {s["pid"] for s in st["subscribers"]} == {s.pid for s in subs}
        for generation in (2, 3):
            before = live(fenv)["seq"]
            wait_for("feedd going", seq_at_least(fenv, before + 500))
            pub.kill()
            down = status(fenv)  # the command, this time
            assert not down["running"] and down["pid"] is None and down["rc"] == 1
            assert len(down["subscribers"]) == 2   # they wait for it
            pub, start, gen = feedd_run(fenv, *args)
            progs.append(pub)
            assert gen == generation and start >= down["seq"] >= before + 500
        wait_for("feedd going", seq_at_least(fenv, live(fenv)["seq"] + 500))
        summaries = []
        for s in subs:
            s.signal(signal.SIGTERM)
            summaries.append(json.loads(s.finish(60)[1].splitlines()[-1]))
        truth = Truth(7, 30, live(fenv)["seq"] + 10_000)
        for summary, rec in zip(summaries, recs.values(), strict=True):
            # Every update from its snapshot to its last one, each the
            # publisher's: the restarted feedd went on with the same walk.
            check_joined(truth, *read_record(rec), summary["last_seq"])
            assert summary["missed"] == summary["channel_missed"] == 0, summary
            assert summary["duplicates"] <= 2, summary
        st = live(fenv)
        assert st["running"] and st["generation"] == 3 and st["subscribers"] == []
        pub.stop()


def test_a_feed_nobody_holds_is_gone_with_its_publisher(fenv: dict[str, str]) -> None:
    """With no subscriber attached, a SIGKILLed feedd leaves nothing: the
    supervisor removes the regions, and the next feedd starts a new feed."""
    with programs() as progs:
        pub, _start, _gen = feedd_run(fenv, "--rate", "2000")
        progs.append(pub)
        wait_for("feedd going", seq_at_least(fenv, 100))
        pub.kill()
        wait_for("regions removed", lambda: live(fenv)["seq"] is None)
        pub, start, gen = feedd_run(fenv, "--rate", "2000")
        progs.append(pub)
        assert (start, gen) == (0, 1)
        pub.stop()


def test_a_second_feedd_under_the_same_name_is_refused(fenv: dict[str, str]) -> None:
    with programs() as progs:
        pub, _start, _gen = feedd_run(fenv, "--rate", "100")
        progs.append(pub)
        second = Program(fenv, FEEDD, "run")
        progs.append(second)
        assert second.proc.wait(30) == 2
        err = second.stderr()
        assert "RoleTaken" in err or "allows one producer" in err, err
        assert live(fenv)["pid"] == pub.pid
        pub.signal(signal.SIGINT)   # Ctrl-C: a clean exit too
        pub.finish()


# ------------------------------------------- a kill at each step of an update --
STEPS = ("torn slot", "slot", "last_seq", "lossless sent", "lossy sent", "sent_seq")


def _publish_then_die(ns: str, step: int, ready: Event, go: Event) -> None:
    """In a forked child: publish updates 1..10, wait for the subscribers,
    then do update 11 by hand, in publish's order, up to ``step``, and
    SIGKILL itself there."""
    pub = feed.Publisher("ticks", keys=8, namespace=ns)
    for n in range(1, 11):
        pub.publish(f"K{n % 3}", float(n))
    ready.set()
    go.wait(30)
    snap, index, msg = pub.snapshot, pub._index["K2"], (11, "K2", 11.0)
    slot = snap._slot(index)
    copy = slot + feed.COPY0 + feed.COPY_SIZE * ((snap._load(slot - snap._base) + 1) & 1)
    steps: list[Callable[[], Any]] = [
             lambda: feed._put(snap._buf, copy, (11).to_bytes(8, "little") * 3),
             lambda: snap.write_slot(index, 11, 11.0),
             lambda: snap._store(feed.LAST_SEQ, 11),
             lambda: pub._tx[0].send_obj(msg),
             lambda: pub._tx[1].send_obj(msg),
             lambda: snap._store(feed.SENT_SEQ, 11)]
    for do in steps[:step + 1]:
        do()
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("step", range(len(STEPS)), ids=STEPS)
def test_a_publisher_killed_at_each_step_of_an_update_is_resumed_exactly(
        fenv: dict[str, str], step: int) -> None:
    """Whatever step of update 11 the publisher died after, the next one
    resumes so that both subscribers apply 11 (or, if it was never written,
    the new publisher's 11) and 12 exactly once, with no gap."""
    ns = fenv["SHMRING_NAMESPACE"]
    ctx = mp.get_context("fork")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_publish_then_die, args=(ns, step, ready, go))
    child.start()
    subs: list[Any] = []
    try:
        assert ready.wait(30)
        subs = [feed.Subscriber("ticks", lossy=lossy, namespace=ns) for lossy in (False, True)]
        assert all(s.snapshot_seq == 10 for s in subs)
        go.set()
        child.join(30)
        assert child.exitcode == -signal.SIGKILL
        pub = feed.Publisher("ticks", namespace=ns)   # this process takes over
        try:
            written = step >= 1
            assert pub.seq == (11 if written else 10)
            assert pub.resent == (written and step < 5)
            if not written:
                pub.publish("K2", 11.0)
            pub.publish("K0", 12.0)
            for sub in subs:
                got = [sub.recv(timeout=10)[:] for _ in range(2)]
                assert got == [(11, "K2", 11.0, 0), (12, "K0", 12.0, 0)], got
                assert sub.state == {"K0": 12.0, "K1": 10.0, "K2": 11.0}
                with pytest.raises(shmring.WouldBlock):
                    sub._rx.recv_obj_nowait()  # nothing more: no third copy of anything
                sent_here = (4 if sub.lossy else 3) <= step <= 4
                assert sub.duplicates == int(sent_here), (sub.lossy, step)
                assert sub.missed == sub.channel_missed == 0
        finally:
            pub.close()
    finally:
        for sub in subs:
            sub.close()
        if child.is_alive():
            child.kill()
        child.join(10)
