"""examples/pipeline/: ``wordfreq.py`` run as a program, the way its README
says, with real SIGKILLs of its workers (``--chaos``), a document that kills
every worker that reads it (``--poison``), and the program itself killed
mid-run.

Each run gets a namespace of its own (``$SHMRING_NAMESPACE``, carrying this
test process's pid, so the leak check of conftest.py sees its segments), and
its segments must be gone once it is.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from queue_util import wait_gone

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pipeline"
WORDFREQ = EXAMPLE / "wordfreq.py"
CORPUS = EXAMPLE / "corpus.py"
TIMEOUT = 60.0
_runs = itertools.count()


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    """The environment of one program run: a namespace of its own, a
    supervisor that leaves soon after; its segments must be gone at the end."""
    ns = f"wf-{os.getpid()}-{next(_runs)}"
    yield dict(os.environ, SHMRING_NAMESPACE=ns, SHMRING_SUPERVISOR_IDLE="1",
               PYTHONDONTWRITEBYTECODE="1")
    assert wait_gone(_segments(ns)), f"left in /dev/shm: {_segments(ns)}"


def _segments(ns: str) -> list[str]:
    return [f"/dev/shm/{e}" for e in os.listdir("/dev/shm") if e.startswith(f"shmring.{ns}.")]


def wordfreq(env: dict[str, str], *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the program to its end."""
    return subprocess.run([sys.executable, str(WORDFREQ), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def summary(env: dict[str, str], *args: str) -> dict[str, Any]:
    """The ``--json`` summary of a run that must exit 0."""
    done = wordfreq(env, *args, "--json")
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    s: dict[str, Any] = json.loads(done.stdout)
    return s


# ---------------------------------------------------------------- README --
def console_blocks(path: Path) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """(where, [(command, output lines)]) of each ```console block of a page."""
    lines = path.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        where = f"{path.relative_to(ROOT)}:{i + 1}"
        runs: list[tuple[str, list[str]]] = []
        i += 1
        while not lines[i].startswith("```"):
            if lines[i].startswith("$ "):
                runs.append((lines[i][2:], []))
            else:
                runs[-1][1].append(lines[i])
            i += 1
        blocks.append((where, runs))
    return blocks


def readme_blocks() -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """The example's console blocks, and those of examples/README.md that run it."""
    own = console_blocks(EXAMPLE / "README.md")
    index = [b for b in console_blocks(ROOT / "examples" / "README.md")
             if any("examples/pipeline/" in cmd for cmd, _ in b[1])]
    return own + index


BLOCKS = readme_blocks()
_FLOAT = re.compile(r"\d+\.\d+")


def normalize(line: str, chaos: bool) -> str:
    """What must match of an output line: times and medians vary, and under
    --chaos so do the per-stage counts (which worker died where)."""
    line = _FLOAT.sub("<t>", line.rstrip())
    if chaos and re.match(r"(parse|filter|split|count) ", line):
        return line.split()[0]
    if chaos and line.startswith("chaos: "):
        return line.split(" (")[0]
    return line


def matches(expected: list[str], actual: list[str]) -> bool:
    """Lines equal, where a line ``...`` stands for any lines and a line
    ending in ``...`` for any line that starts like it."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == "...":
        return any(matches(rest, actual[k:]) for k in range(len(actual) + 1))
    if not actual:
        return False
    if head.endswith("...") and len(head) > 3:
        ok = actual[0].startswith(head[:-3].rstrip())
    else:
        ok = head == actual[0]
    return ok and matches(rest, actual[1:])


def test_the_readme_blocks_are_found() -> None:
    commands = [cmd for _, runs in BLOCKS for cmd, _ in runs]
    assert len(BLOCKS) >= 6, [w for w, _ in BLOCKS]
    for flag in ("--chaos", "--poison", "--ordered", "--json", " - "):
        assert any(flag in c for c in commands), flag
    assert matches(["a", "...", "c"], ["a", "b", "b", "c"]) and not matches(["a"], ["a", "b"])


@pytest.mark.parametrize("block", BLOCKS, ids=[w for w, _ in BLOCKS])
def test_readme_commands_print_what_it_says(
        block: tuple[str, list[tuple[str, list[str]]]], env: dict[str, str],
        tmp_path: Path) -> None:
    """Each command of the block, as written (run from an empty directory,
    ``python`` this interpreter), prints the lines the README shows."""
    where, runs = block
    for cmd, expected in runs:
        line = cmd.replace("examples/", f"{ROOT / 'examples'}/")
        line = re.sub(r"^python\b", shlex.quote(sys.executable), line)
        done = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT)
        assert done.returncode == 0, f"{where}: {cmd}: exit {done.returncode}\n{done.stderr}"
        chaos = "--chaos" in cmd
        want = [normalize(x, chaos) for x in expected]
        got = [normalize(x, chaos) for x in done.stdout.splitlines()]
        assert matches(want, got), (f"{where}: {cmd}\n--- README\n" + "\n".join(want)
                                    + "\n--- printed\n" + "\n".join(got))


# ----------------------------------------------------------------- kills --
def test_chaos_kills_land_mid_item_and_the_totals_still_match(env: dict[str, str]) -> None:
    """With --cost every worker has an item in hand when it is killed: the
    item goes to another worker, and every paragraph is counted once."""
    s = summary(env, "--generate", "400", "--cost", "2", "--chaos", "3", "--workers", "2")
    assert s["verified"] and s["problems"] == [], s["problems"]
    killed = s["chaos"]["killed"]
    assert len(killed) == 3 and len({k["pid"] for k in killed}) == 3, killed
    stats = s["stats"]
    # A worker leaving anyway (its stage done) when the signal comes exits 0
    # and is not restarted: restarts can be fewer than kills, never more.
    assert 1 <= sum(st["restarts"] for st in stats.values()) <= 3, stats
    assert stats["count"]["redelivered"] >= 1, stats["count"]
    assert s["dead_letters"] == []
    clean = summary(env, "--generate", "400")
    assert (s["paragraphs"], s["words"], s["top"]) == (
        clean["paragraphs"], clean["words"], clean["top"])
    for k in killed:  # really killed, not only asked
        assert not _alive(k["pid"]), k


def test_chaos_over_every_stage_keeps_the_order(env: dict[str, str]) -> None:
    """Kills without --cost hit any stage; an ordered run still yields its
    outputs in source order, each once."""
    s = summary(env, "--generate", "1500", "--chaos", "4", "--ordered", "--seed", "7")
    assert s["verified"] and s["ordered"], s["problems"]
    assert len(s["chaos"]["killed"]) == 4
    assert 1 <= sum(st["restarts"] for st in s["stats"].values()) <= 4, s["stats"]


def test_a_poison_document_is_a_dead_letter_and_the_rest_is_counted(
        env: dict[str, str]) -> None:
    s = summary(env, "--generate", "600", "--poison")
    assert s["verified"], s["problems"]
    [dead] = s["dead_letters"]
    assert dead["reason"] == "killed by SIGKILL"
    line, paragraph, text = dead["item"]
    assert (line, paragraph) == (301, 0) and "crash-the-tokenizer" in text
    count = s["stats"]["count"]
    # tried max_redeliveries + 1 = 3 times, each attempt killing its worker
    assert (count["dead_lettered"], count["restarts"]) == (1, 3), count
    clean = summary(env, "--generate", "600")
    assert (s["lines"], s["paragraphs"], s["words"], s["top"]) == (
        clean["lines"] + 1, clean["paragraphs"], clean["words"], clean["top"])


def test_bad_lines_of_a_file_are_dead_letters_with_their_errors(
        env: dict[str, str], tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, str(CORPUS), "50", "--seed", "3"],
                          capture_output=True, text=True, timeout=TIMEOUT, check=True)
    good = made.stdout.splitlines()
    assert len(good) == 50 and all(json.loads(x)["text"] for x in good)
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join([good[0], '{"id": 1, "text": "cut sho', *good[1:20], "",
                               '["not", "a", "document"]', *good[20:]]) + "\n")
    s = summary(env, str(path), "--lang", "all")
    assert s["verified"], s["problems"]
    reasons = {d["item"][0]: d["reason"] for d in s["dead_letters"]}
    assert reasons.keys() == {2, 23}, s["dead_letters"]
    assert reasons[2].startswith("JSONDecodeError: Unterminated string")
    assert reasons[23].startswith('ValueError: not a document: expected an object')
    assert s["lines"] == 52 and s["documents"] == 50
    assert s["stats"]["parse"]["dead_lettered"] == 2


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _workers(pid: int) -> list[int]:
    """The forked children of ``pid`` (same command line: not the
    supervisor it may have started)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        kids = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []
    out = []
    for kid in kids:
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                if f.read() == cmdline:
                    out.append(kid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def test_killing_the_program_mid_run_leaves_no_worker_and_no_segment(
        env: dict[str, str]) -> None:
    """The program reads a stdin that is still open, with outputs coming
    out; SIGKILL it: its workers leave within seconds, and its supervisor
    removes every segment of the run."""
    ns = env["SHMRING_NAMESPACE"]
    lines = subprocess.run([sys.executable, str(CORPUS), "200"], capture_output=True,
                           text=True, timeout=TIMEOUT, check=True).stdout.splitlines()
    prog = subprocess.Popen([sys.executable, str(WORDFREQ), "-", "--workers", "1", "--progress"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert prog.stdin is not None and prog.stderr is not None
        prog.stdin.write("\n".join(lines[:120]) + "\n")
        prog.stdin.flush()
        # progress lines: "parse 120>120 (1w)  ...  count 180>180 (1w)"
        deadline = time.monotonic() + TIMEOUT
        counted = 0
        while counted == 0:
            assert time.monotonic() < deadline, "no progress line with outputs"
            line = prog.stderr.readline()
            assert line, f"the program ended: {prog.wait()}"
            m = re.search(r"count (\d+)>(\d+)", line)
            counted = int(m.group(2)) if m else 0
        workers = _workers(prog.pid)
        assert len(workers) == 4, workers  # one per stage
        assert len(_segments(ns)) == 7  # four edges, the output, control, board
        prog.stdin.write("\n".join(lines[120:150]) + "\n")  # more arrives as it dies
        prog.stdin.flush()
        os.kill(prog.pid, signal.SIGKILL)
        assert prog.wait(TIMEOUT) == -signal.SIGKILL
        t0 = time.monotonic()
        while any(_alive(w) for w in workers) and time.monotonic() - t0 < 5.0:
            time.sleep(0.02)
        assert not [w for w in workers if _alive(w)], "workers outlived their run by 5 s"
        assert wait_gone(_segments(ns), 10.0), f"left in /dev/shm: {_segments(ns)}"
    finally:
        if prog.poll() is None:
            prog.kill()
            prog.wait(5)
        for f in (prog.stdin, prog.stdout, prog.stderr):
            if f is not None:
                f.close()


# ----------------------------------------------------------- the checker --
def _load() -> ModuleType:
    """wordfreq.py as a module (it imports corpus.py from its folder; its
    dataclasses look their module up in sys.modules while it loads)."""
    name = "wordfreq_under_test"
    spec = importlib.util.spec_from_file_location(name, WORDFREQ)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXAMPLE))
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(EXAMPLE))
        del sys.modules[name]
    return mod


def test_the_check_finds_every_kind_of_difference() -> None:
    """``problems`` is not vacuous: a duplicate, a loss, a wrong total, an
    unexpected dead letter and an output out of order are each reported."""
    wf = _load()
    lines = [json.dumps({"lang": "en", "text": "river time\n\nriver light"}), "{oops"]
    ref = wf.reference(lines, None, "en")
    assert ref.keys == {("paragraph", 1, 0), ("paragraph", 1, 1)}
    assert ref.dead == {("line", 2)} and ref.totals == {"river": 2, "time": 1, "light": 1}

    def outcome(**kw: Any) -> Any:
        out = wf.Outcome(totals=ref.totals.copy(), keys=set(ref.keys),
                         dead_letters=[((2, "{oops"), "JSONDecodeError: ...")])
        for k, v in kw.items():
            setattr(out, k, v)
        return out

    assert wf.problems(outcome(), ref, True) == []
    cases = {
        "counted twice": outcome(duplicates=[("paragraph", 1, 0)]),
        "never counted": outcome(keys={("paragraph", 1, 0)}),
        "should not be there": outcome(keys=ref.keys | {("paragraph", 9, 0)}),
        "word totals differ": outcome(totals=ref.totals + wf.Counter(["time"])),
        "dead letters": outcome(dead_letters=[]),
        "out of source order": outcome(out_of_order=1),
    }
    for words, out in cases.items():
        found = wf.problems(out, ref, True)
        assert len(found) == 1 and words in found[0], (words, found)


def test_a_difference_fails_the_program(env: dict[str, str]) -> None:
    """The program itself exits 1 and says NOT verified when the totals
    differ (here the reference is made to expect one paragraph more)."""
    code = (
        "import sys, runpy\n"
        f"sys.path.insert(0, {str(EXAMPLE)!r})\n"
        "import wordfreq\n"
        "real = wordfreq.reference\n"
        "def wrong(*a):\n"
        "    ref = real(*a)\n"
        "    ref.keys.add(('paragraph', 10**6, 0))\n"
        "    return ref\n"
        "wordfreq.reference = wrong\n"
        "sys.exit(wordfreq.main(['--generate', '50']))\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 1, done.stderr
    assert "NOT verified: 1 paragraphs never counted, e.g. ('paragraph', 1000000, 0)" in (
        done.stdout)
    assert "verified: totals match" not in done.stdout


@pytest.mark.parametrize("args, message", [
    ((), "give a corpus file or --generate N"),
    (("-", "--chaos", "2"), "--chaos spreads its kills over the lines"),
    (("no-such-file.jsonl",), "cannot read no-such-file.jsonl"),
])
def test_usage_errors_exit_2(env: dict[str, str], tmp_path: Path, args: tuple[str, ...],
                             message: str) -> None:
    done = subprocess.run([sys.executable, str(WORDFREQ), *args], env=env, cwd=tmp_path,
                          input="", capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stdout == ""
