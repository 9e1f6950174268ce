"""``shmring cat DIR`` and ``shmring inspect DIR`` on journals written here:
what a person reads (objects decoded, bytes escaped so nothing drives the
terminal, pickles left alone unless asked), what a script reads (``--json``
with the exact bytes), and ``inspect`` telling a journal's directory from a
region's name. Also the help texts that say what ``record`` takes from a
channel of each pattern.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
from pathlib import Path

import pytest

from shmring._cli.main import main, parser
from shmring._cli.stopping import stop_on_signals
from shmring._journal import Journal

HOSTILE = b"\x1b[2J\x1b]0;owned\x07\r\x00\xff evil"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    got = capsys.readouterr()
    return code, got.out, got.err


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """A journal of four kinds of record, small segments (so several), a
    named cursor, and 500 filler records after them."""
    path = tmp_path / "j"
    with Journal.create(str(path), sync="none", segment_size=1 << 14) as j:
        w = j.writer()
        w.append(HOSTILE)                                    # 0: bytes
        w.append_obj({"a": (1, 2.5, b"x"), 3: None, "n": float("nan")})  # 1: value
        w.append_obj({1, 2})                                 # 2: pickled (a set)
        w.append(b"plain text")                              # 3: bytes, UTF-8
        for i in range(500):
            w.append(b"%05d" % i + b"." * 40)
        w.flush()
        r = j.reader(name="indexer")
        r.read(timeout=1)
        r.ack(9)
    return path


def test_cat_decodes_objects_and_escapes_bytes(journal: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cat", str(journal), "--count", "4")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4
    assert [ln.split("\t")[:3] for ln in lines] == [
        ["0", str(len(HOSTILE)), "bytes"], ["1", lines[1].split("\t")[1], "obj"],
        ["2", lines[2].split("\t")[1], "pickle"], ["3", "10", "bytes"]]
    assert lines[0].split("\t")[3] == repr(HOSTILE)
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out  # nothing raw
    assert lines[1].split("\t")[3] == repr({"a": (1, 2.5, b"x"), 3: None, "n": float("nan")})
    assert "--unpickle decodes it" in lines[2] and "{1, 2}" not in lines[2]
    code, out, _ = run(capsys, "cat", str(journal), "--from", "2", "--count", "1",
                       "--unpickle")
    assert out.split("\t")[3].strip() == "{1, 2}"


def test_cat_json_keeps_the_exact_bytes(journal: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cat", str(journal), "--json", "--count", "4")
    assert code == 0
    recs = [json.loads(ln) for ln in out.splitlines()]
    with Journal.open(str(journal)) as j, j.reader(timeout=0) as r:
        truth = [next(iter(r)) for _ in range(4)]
    assert [(x["seq"], base64.b64decode(x["base64"])) for x in recs] == truth
    assert [x["kind"] for x in recs] == ["bytes", "object", "pickle", "bytes"]
    assert "text" not in recs[0]  # not UTF-8
    assert recs[1]["value"] == {"$items": [["a", [1, 2.5, {"$bytes": "eA=="}]], [3, None],
                                           ["n", {"$float": "nan"}]]}
    assert "value" not in recs[2]
    assert recs[3]["text"] == "plain text"


def test_cat_from_and_count_and_the_end(journal: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cat", str(journal), "--from", "500")
    assert code == 0
    assert [ln.split("\t")[0] for ln in out.splitlines()] == [str(s) for s in range(500, 504)]
    assert out.splitlines()[-1].endswith(repr(b"00499" + b"." * 40))
    code, out, _ = run(capsys, "cat", str(journal), "--from", "504")
    assert (code, out) == (0, "")  # past the end: nothing, at once
    code, out, _ = run(capsys, "cat", str(journal), "--from", "10", "--width", "20",
                       "--count", "2")
    assert [len(ln.split("\t")[3]) for ln in out.splitlines()] == [20, 20]


def test_inspect_shows_segments_range_cursors_and_the_durable_point(
        journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", str(journal))
    assert code == 0
    assert f"journal {journal}" in out
    assert "seq 0..503 (504 records)" in out
    assert "seq 504: every record is on disk" in out
    files = sorted(f for f in os.listdir(journal) if f.endswith(".seg"))
    assert len(files) > 1
    for f in files:
        assert f in out
    (cursor,) = [ln for ln in out.splitlines() if ln.strip().startswith("indexer")]
    assert cursor.split() == ["indexer", "10", "494"]
    code, out, _ = run(capsys, "inspect", str(journal), "--json")
    info = json.loads(out)
    assert (info["first_seq"], info["next_seq"], info["durable_seq"]) == (0, 504, 504)
    assert [s["file"] for s in info["segments"]] == files
    assert sum(s["records"] for s in info["segments"]) == 504
    assert info["cursors"] == {"indexer": 10}


def test_inspect_shows_what_is_not_durable_yet(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "j"
    with Journal.create(str(path), sync="none") as j:
        w = j.writer()
        w.append(b"a")
        w.flush()
        w.append(b"b")
        w.append(b"c")
        code, out, _ = run(capsys, "inspect", str(path))  # beside the live writer
        assert code == 0
        assert "seq 1: the records below it are on disk, 1..2 not synced yet" in out
        assert f"pid {os.getpid()}" in out


def test_inspect_tells_a_journal_from_a_region_name(
        journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(journal.parent)
    code, out, _ = run(capsys, "inspect", "j")  # a directory here, holding a journal
    assert code == 0 and "journal j" in out
    (tmp_path / "plain").mkdir()
    code, _, err = run(capsys, "inspect", str(tmp_path / "plain"))
    assert code == 2
    assert "bad region name" in err and "not a journal directory" in err
    code, _, err = run(capsys, "inspect", "no-such-region-here", "-n", "jcli-none")
    assert code == 1 and "no region 'no-such-region-here'" in err


def test_cat_of_something_else_is_one_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "cat", str(tmp_path))
    assert code == 1
    assert err.splitlines() == [f"shmring: error: no journal at {tmp_path}"]
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "journal.meta").write_bytes(pickle.dumps("not a meta page"))
    code, _, err = run(capsys, "cat", str(tmp_path / "j"))
    assert code == 1 and len(err.splitlines()) == 1 and "journal.meta" in err, err


def test_help_says_what_record_takes_from_each_pattern() -> None:
    sub = next(a for a in parser()._actions if a.dest == "command")
    choices = getattr(sub, "choices")  # noqa: B009  (argparse keeps them here)
    record = choices["record"].format_help()
    assert "taps the stream" in record and "broadcast" in record
    assert "spsc" in record and "mpsc" in record and "THE consumer" in record
    assert "mpmc" in record and "taken from them" in " ".join(record.split())
    replay = " ".join(choices["replay"].format_help().split())
    assert "CHANNEL must exist" in replay and "--create creates it" in replay
    cat = " ".join(choices["cat"].format_help().split())
    assert "--unpickle" in cat and "runs code" in cat


def test_a_stop_signal_is_a_flag_and_a_second_one_interrupts() -> None:
    """SIGTERM then SIGINT, really sent to this process: the first is only
    noted (the loop leaves at its next check), the second, while stopping,
    raises KeyboardInterrupt; the handlers before are back afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
