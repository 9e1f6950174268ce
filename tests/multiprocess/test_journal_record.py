"""``shmring record`` and ``shmring replay`` with real processes: a producer
process, the recorder as a subprocess, SIGKILL, SIGTERM, replay into a
channel a consumer reads, and every byte compared.

The producer (``journal_cli_util.producer``) sends message ``i`` =
``msg(i)``: its number, then up to 299 bytes that run through every byte
value, so a record cut, shifted or swapped with another does not compare
equal.
"""

from __future__ import annotations

import re
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from journal_cli_util import (
    NS,
    Proc,
    journal_records,
    journal_state,
    msg,
    namespace_env,
    procs,
    producer,
    recorder,
    run_shmring,
    shmring_argv,
)
from namespace_util import wait_for

import shmring
from shmring._cli.main import main
from shmring._journal import Journal


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    with namespace_env() as e:
        yield e


def test_record_until_end_of_stream_keeps_every_byte(env: dict[str, str], uname: str,
                                                     tmp_path: Path) -> None:
    journal = tmp_path / "j"
    with procs() as ps:
        ps.append(prod := producer(env, uname, "spsc", 3000))
        ps.append(rec := recorder(env, uname, journal))
        assert "the channel's one consumer" in rec.lines_seen()
        out, _ = rec.finish()
        assert "recorded 3,000 messages" in out and "end of stream" in out, out
        assert "every record below seq 3000" in out, out
        prod.finish()
    got = journal_records(journal)
    assert [s for s, _ in got] == list(range(3000))
    assert [d for _, d in got] == [msg(i) for i in range(3000)]
    assert journal_state(journal) == (3000, 3000)  # all durable: flushed on the way out


def test_sigkilled_recorder_leaves_a_prefix_that_replays_exactly(
        env: dict[str, str], uname: str, tmp_path: Path) -> None:
    """The crash case: the recorder SIGKILLed mid-stream (and the producer
    after it). The journal is an exact prefix of what was sent, nothing
    torn; replayed into a new channel, a consumer gets exactly that prefix,
    and ``--from``/``--count`` pick a slice of it."""
    journal = tmp_path / "j"
    with procs() as ps:
        ps.append(prod := producer(env, uname, "spsc", -1, eos=False))
        ps.append(rec := recorder(env, uname, journal, "--sync", "none"))

        wait_for("2,000 records", lambda: journal_state(journal)[1] >= 2000)
        rec.kill()
        prod.kill()
    got = journal_records(journal)
    n = len(got)
    assert n >= 2000
    assert got == [(i, msg(i)) for i in range(n)]  # a prefix, in order, whole

    replayed = uname + "-r"
    with procs() as ps:
        ps.append(rp := Proc(shmring_argv("replay", str(journal), replayed, "--create"), env))
        ch = shmring.Channel.open(replayed, wait=10, namespace=env[NS])
        try:
            rx = ch.consumer()
            seen: list[bytes] = []
            with pytest.raises(shmring.EndOfStream):
                while True:
                    seen.append(rx.recv(timeout=10))
        finally:
            ch.close()
        out, _ = rp.finish()
    assert seen == [msg(i) for i in range(n)]
    assert f"replayed {n:,} records" in out and "end of stream marked" in out, out

    # A slice, into a channel that exists: opened, not created; no end of
    # stream unless asked for.
    ch = shmring.Channel.create(uname + "-s", capacity=1 << 16, namespace=env[NS])
    try:
        rx = ch.consumer()
        done = run_shmring(env, "replay", str(journal), uname + "-s", "--from", "100",
                           "--count", "50")
        assert done.returncode == 0, done.stderr
        assert [rx.recv(timeout=5) for _ in range(50)] == [msg(i) for i in range(100, 150)]
        with pytest.raises(shmring.WouldBlock):
            rx.recv_nowait()  # not EndOfStream: the replay left the stream open
    finally:
        ch.close()
        ch.unlink()


@pytest.mark.parametrize("pattern", ["spsc", "mpsc"])
def test_a_recorder_killed_and_started_again_loses_nothing(
        env: dict[str, str], uname: str, tmp_path: Path, pattern: str) -> None:
    """On spsc/mpsc a message leaves the ring only once it is appended: a
    recorder SIGKILLed mid-stream and started again on the same journal
    records the whole stream, at most the record it died on twice."""
    journal, hold = tmp_path / "j", tmp_path / "done"
    with procs() as ps:
        # held open until the end: with no live user the channel would go
        ps.append(prod := producer(env, uname, pattern, 6000, hold=hold))
        ps.append(rec := recorder(env, uname, journal, "--sync", "none"))
        wait_for("1,000 records", lambda: journal_state(journal)[1] >= 1000)
        rec.kill()
        ps.append(rec := recorder(env, uname, journal))
        out, _ = rec.finish()
        assert "end of stream" in out and "appending" in rec.lines_seen(), out
        hold.touch()
        prod.finish()
    numbers = [struct.unpack_from("<I", d)[0] for _, d in journal_records(journal)]
    dups = len(numbers) - len(set(numbers))
    assert sorted(set(numbers)) == list(range(6000))  # nothing lost
    assert dups <= 1, dups
    if dups:  # the one the first recorder died on, right where it died
        k = next(i for i in range(1, len(numbers)) if numbers[i] <= numbers[i - 1])
        assert numbers[k] == numbers[k - 1]
    assert numbers == sorted(numbers)  # in order


def test_sigterm_stops_the_recorder_flushed(env: dict[str, str], uname: str,
                                            tmp_path: Path) -> None:
    journal = tmp_path / "j"
    with procs() as ps:
        ps.append(prod := producer(env, uname, "mpsc", -1, eos=False))
        ps.append(rec := recorder(env, uname, journal, "--sync", "none"))
        wait_for("records", lambda: journal_records(journal))
        rec.proc.send_signal(signal.SIGTERM)
        out, _ = rec.finish()
        prod.kill()
    assert "stopped" in out, out
    got = journal_records(journal)
    assert got == [(i, msg(i)) for i in range(len(got))]
    # Flushed on the way out: every record durable.
    assert journal_state(journal) == (len(got), len(got))
    assert f"every record below seq {len(got)}" in out


def test_broadcast_recorder_taps_without_stealing(env: dict[str, str], uname: str,
                                                  tmp_path: Path) -> None:
    """On broadcast the recorder is one more subscriber: the application's
    consumer still gets every message, and so does the journal. A second
    recording appends to the same journal."""
    journal = tmp_path / "j"
    for run in range(2):
        with procs() as ps:
            ps.append(prod := producer(env, uname, "broadcast", 2000, consumers=2))
            ch = shmring.Channel.open(uname, namespace=env[NS])
            try:
                rx = ch.consumer()
                ps.append(rec := recorder(env, uname, journal))
                assert "taps the stream" in rec.lines_seen()
                mine = []
                with pytest.raises(shmring.EndOfStream):
                    while True:
                        mine.append(rx.recv(timeout=10))
            finally:
                ch.close()
            out, _ = rec.finish()
            prod.finish()
        assert mine == [msg(i) for i in range(2000)]
        assert f"from seq {2000 * run}" in rec.lines_seen()
        assert "recorded 2,000 messages" in out, out
    got = journal_records(journal)
    assert [d for _, d in got] == [msg(i) for i in range(2000)] * 2


def test_mpmc_recorder_is_one_consumer_among_others(env: dict[str, str], uname: str,
                                                    tmp_path: Path) -> None:
    """On mpmc the recorder takes what it records: with another consumer,
    the two together get each message exactly once."""
    journal = tmp_path / "j"
    with procs() as ps:
        ps.append(prod := producer(env, uname, "mpmc", 4000, consumers=2))
        ch = shmring.Channel.open(uname, namespace=env[NS])
        try:
            rx = ch.consumer()
            ps.append(rec := recorder(env, uname, journal))
            assert "taken from the other consumers" in rec.lines_seen()
            mine = []
            with pytest.raises(shmring.EndOfStream):
                while True:
                    mine.append(rx.recv(timeout=10))
                    time.sleep(0.0002)  # leave the recorder its share
        finally:
            ch.close()
        rec.finish()
        prod.finish()
    recorded = [d for _, d in journal_records(journal)]
    assert recorded and mine
    assert sorted(recorded + mine) == sorted(msg(i) for i in range(4000))


def test_replay_rate_paces_it(env: dict[str, str], uname: str, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    j = Journal.create(str(journal), sync="none")
    try:
        w = j.writer()
        for i in range(40):
            w.append(msg(i))
        w.flush()
    finally:
        j.close()
    ch = shmring.Channel.create(uname, capacity=1 << 16, namespace=env[NS])
    try:
        rx = ch.consumer()
        t = time.monotonic()
        done = run_shmring(env, "replay", str(journal), uname, "--rate", "100",
                           "--end-of-stream")
        dt = time.monotonic() - t
        assert done.returncode == 0, done.stderr
        assert dt >= 0.39  # 40 records at 100 a second: the last one at 0.39 s
        got = []
        with pytest.raises(shmring.EndOfStream):
            while True:
                got.append(rx.recv(timeout=5))
        assert got == [msg(i) for i in range(40)]
    finally:
        ch.close()
        ch.unlink()


def test_record_and_replay_refuse_bad_input_in_one_line(
        env: dict[str, str], uname: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Refusals in one line, in this process (``main``, as the console script
    calls it); one case also as a process of its own, as a user types it."""
    cases = [
        (("record", uname + "-none", str(tmp_path / "j")), 1, "no region"),
        (("replay", str(tmp_path / "nothing"), uname), 1, str(tmp_path / "nothing")),
        (("replay", str(tmp_path), uname, "--pattern", "mpmc"), 2, "--create"),
        (("replay", str(tmp_path), uname, "--rate", "0"), 2, "--rate"),
        (("record", "bad/name", str(tmp_path / "j")), 2, "bad region name"),
    ]
    held, big = tmp_path / "held", tmp_path / "big"
    with Journal.create(str(big)) as jb:
        jb.writer().append(b"x" * 2000)
    ch = shmring.Channel.create(uname, capacity=4096, namespace=env[NS])  # max_message 1024
    wide = shmring.Channel.create(uname + "-wide", capacity=1 << 16, namespace=env[NS])
    j = Journal.create(str(held))
    try:
        j.writer()
        cases.append((("record", uname, str(held)), 1, "already has a writer"))
        cases.append((("record", uname, str(tmp_path)), 1, "no journal at"))
        cases.append((("record", uname + "-wide", str(tmp_path / "small"), "--segment-size",
                       "16K"), 2, "--segment-size"))  # 16 KiB messages, 16 KiB segments
        cases.append((("replay", str(big), uname), 1,
                      "record 0 (2,000 bytes) is larger than channel"))
        for argv, status, word in cases:
            assert refusal(capsys, (*argv, "-n", env[NS])) == status, argv
            line = capsys.readouterr().err.rstrip("\n")
            assert "\n" not in line and line.startswith("shmring: error: "), (argv, line)
            assert word in line, (argv, line)
        assert ch.consumers == wide.consumers == 0  # the recorder never joined
        assert not (tmp_path / "small").exists()  # nor left a journal it made
        done = run_shmring(env, "record", uname, str(held))
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
        assert done.stderr.startswith("shmring: error: journal ")
        assert done.stderr.count("\n") == 1 and "already has a writer" in done.stderr
    finally:
        j.close()
        for c in (ch, wide):
            c.close()
            c.unlink()


def refusal(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> int:
    """The exit status of ``shmring ARGV`` run in this process."""
    capsys.readouterr()
    try:
        return main(list(argv))
    except SystemExit as e:  # argparse's refusal
        return int(e.code or 0)


def test_follow_prints_and_replays_live_appends_until_sigterm(
        env: dict[str, str], uname: str, tmp_path: Path) -> None:
    """``cat --follow`` and ``replay --follow`` beside a live writer (this
    process): what is there, then each append as it comes, until SIGTERM,
    which ends both with status 0."""
    journal = tmp_path / "j"
    ch = shmring.Channel.create(uname, capacity=1 << 16, namespace=env[NS])
    try:
        rx = ch.consumer()
        with Journal.create(str(journal), sync="none") as j, procs() as ps:
            w = j.writer()
            for i in range(10):
                w.append(msg(i))
            ps.append(cat := Proc(shmring_argv("cat", str(journal), "--follow"), env))
            ps.append(rp := Proc(shmring_argv("replay", str(journal), uname, "--follow"), env))
            assert [cat.line().split("\t")[0] for _ in range(10)] == [str(i) for i in range(10)]
            assert [rx.recv(timeout=10) for _ in range(10)] == [msg(i) for i in range(10)]
            for i in range(10, 15):
                w.append(msg(i))
            assert [cat.line().split("\t")[0] for _ in range(5)] == [str(i) for i in range(10, 15)]
            assert [rx.recv(timeout=10) for _ in range(5)] == [msg(i) for i in range(10, 15)]
            for p in (cat, rp):
                p.proc.send_signal(signal.SIGTERM)
            assert cat.finish()[0] == ""
            out, _ = rp.finish()
            assert "replayed 15 records" in out and "seq 0..14" in out, out
            assert "stopped by signal" in out and "end of stream" not in out, out
    finally:
        ch.close()
        ch.unlink()


def test_lossy_broadcast_recorder_counts_what_it_missed(env: dict[str, str], uname: str,
                                                       tmp_path: Path) -> None:
    """A recorder stopped (SIGSTOP) while a lossy broadcast producer runs on
    misses messages; resumed, it records what is left in order and says how
    many it missed: recorded + missed = sent."""
    journal = tmp_path / "j"
    with procs() as ps:
        ps.append(prod := producer(env, uname, "broadcast-lossy", 20_000, consumers=2))
        ps.append(rec := recorder(env, uname, journal))
        rec.proc.send_signal(signal.SIGSTOP)
        ch = shmring.Channel.open(uname, namespace=env[NS])  # the second consumer: go
        try:
            rx = ch.consumer()
            assert prod.line() == "sent 20000"
            rec.proc.send_signal(signal.SIGCONT)
            out, _ = rec.finish()
            rx.close()
        finally:
            ch.close()
        prod.finish()
    m = re.search(r"recorded ([\d,]+) messages.*; missed ([\d,]+) ", out)
    assert m, out
    recorded, missed = (int(g.replace(",", "")) for g in m.groups())
    assert missed > 0 and recorded + missed == 20_000
    got = [d for _, d in journal_records(journal)]
    assert len(got) == recorded
    numbers = [struct.unpack_from("<I", d)[0] for d in got]
    assert numbers == sorted(set(numbers))  # in order, none twice
    assert got == [msg(i) for i in numbers]  # each whole
