"""Word frequencies of a JSON Lines corpus, counted by a ``shmring.Pipeline``
of worker processes, then checked against a count done in one process.

The pipeline (see README.md)::

    source: (line number, line)           read lazily, in this process
      -> parse   (map)       the JSON document, or an error: a dead letter
      -> filter  (filter)    documents in --lang
      -> split   (flat_map)  one item per paragraph
      -> count   (map)       word counts of the paragraph (its tokenizer made once
                             per worker by init=)
    -> this process adds up the counts

Run it on a generated corpus, with workers killed while it runs::

    $ python examples/pipeline/wordfreq.py --generate 20000 --chaos 5

``--chaos K`` SIGKILLs K workers (chosen at random through ``run.pids``) as
the run goes; ``--poison`` adds a document that kills whichever worker
tokenizes it. Either way the totals must equal the single-process count:
the program says ``verified: ...`` and exits 0, or says what differs and
exits 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import corpus

import shmring

#: An item of each stage: the source's (line number, line); parse's document;
#: split's (line number, paragraph number, text); count's (line number,
#: paragraph number, {word: count}).
Line = tuple[int, str]
Doc = dict[str, Any]
Paragraph = tuple[int, int, str]
Counts = tuple[int, int, dict[str, int]]
#: Where an item came from: ("line", n) or ("paragraph", n, k).
Key = tuple[Any, ...]

STAGES = ("parse", "filter", "split", "count")
_STOPWORDS = """
a about after all also an and any are as at be been before being between both but by can
could did do down each even first for from get go had has have her here his how if in into
is it its just last like made make many may me might more most much must my never new no
not now of off on one only or other our out over own said same see she should since so
some still such than that the their them then there these they this those through to too
two under up us very was way we well were what when where which while who will with would
you your der die und den von zu das mit sich des auf ist im dem nicht ein eine als auch es
an werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen zum
war haben nur oder aber vor zur bis mehr durch man de la le et les des en un du une que est
pour qui dans par plus pas au sur ne se ce il sont aux avec son elle nous mais ou comme tout
été leur
"""
STOPWORDS = frozenset(_STOPWORDS.split())


# ------------------------------------------------------------------ stages --
def parse(line: Line) -> Doc:
    """A JSON Lines record as a document; ValueError if it is not one."""
    n, raw = line
    rec = json.loads(raw)
    if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
        raise ValueError('not a document: expected an object with a "text" string')
    return {"n": n, "id": rec.get("id"), "lang": str(rec.get("lang", "")), "text": rec["text"]}


def keep(doc: Doc, lang: str) -> bool:
    """Whether ``doc`` is in language ``lang`` (``"all"``: every document)."""
    return lang == "all" or doc["lang"] == lang


def split(doc: Doc) -> Iterator[Paragraph]:
    """The document's non-empty paragraphs (separated by a blank line), in
    order: the same outputs in the same order each time, as flat_map needs."""
    texts = (t for t in doc["text"].split("\n\n") if t.strip())
    for k, text in enumerate(texts):
        yield (doc["n"], k, text)


class Tokenizer:
    """Words of a text: lower case, letters and inner apostrophes, stop words
    and one-letter words left out. A stage's ``init``: made once per worker."""

    def __init__(self, cost: float = 0.0) -> None:
        self.word = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
        self.stop = STOPWORDS
        self.cost = cost  # seconds of extra work per text (--cost)

    @staticmethod
    def crashes(text: str) -> bool:
        """Whether ``text`` makes :meth:`words` kill its process."""
        return corpus.CRASH_TRIGGER in text

    def words(self, text: str) -> list[str]:
        """The words of ``text`` that count. On the crash trigger, this
        process dies of SIGKILL, as a bug in a native tokenizer would kill
        it (a segfault): no exception, nothing to catch."""
        if self.crashes(text):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.cost:
            time.sleep(self.cost)  # a stand-in for heavier work: a model, a service
        found = (w.lower() for w in self.word.findall(text))
        return [w for w in found if len(w) > 1 and w not in self.stop]


def count(par: Paragraph, tok: Tokenizer) -> Counts:
    """The word counts of one paragraph, keyed by where it came from."""
    n, k, text = par
    return (n, k, dict(Counter(tok.words(text))))


# ------------------------------------------------------------------ source --
def numbered(lines: Iterable[str], poison_at: int | None) -> Iterator[Line]:
    """(line number from 1, line) of every non-blank line; with ``poison_at``,
    the poison document is added as line ``poison_at``."""
    n = 0
    for raw in lines:
        n += 1
        if n == poison_at:
            yield (n, corpus.poison(n))
            n += 1
        if raw.strip():
            yield (n, raw)
    if poison_at is not None and n < poison_at:  # fewer lines than that
        yield (n + 1, corpus.poison(n + 1))


class Replay:
    """The lines of a stream that can be read once (stdin): the first pass
    reads them, and keeps them for the next passes."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.kept: list[str] = []
        self.started = False

    def __call__(self) -> Iterator[str]:
        """The lines: read from the stream the first time, then again from memory."""
        if self.started:
            return iter(self.kept)
        self.started = True
        return self._read()

    def _read(self) -> Iterator[str]:
        for line in self.stream:
            self.kept.append(line.rstrip("\r\n"))
            yield self.kept[-1]


def opener(args: argparse.Namespace) -> tuple[Callable[[], Iterator[str]], int | None]:
    """A function giving the corpus's lines afresh each call (the run reads
    them once, the check once more), and how many there are (None: not
    known before the end, for stdin)."""
    if args.generate is not None:
        n, seed = args.generate, args.seed
        return (lambda: corpus.documents(n, seed)), n
    if args.corpus == "-":
        return Replay(sys.stdin), None
    path = args.corpus

    def read() -> Iterator[str]:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield line.rstrip("\r\n")

    return read, sum(1 for _ in read())


# ------------------------------------------------------------------- chaos --
@dataclass
class Chaos:
    """Kills ``kills`` workers while the run goes: one each time the outputs
    reach the next of ``kills`` evenly spaced line numbers, at random among
    the workers of the stages busy with an item at that moment (of every
    stage if none is)."""

    kills: int
    lines: int
    seed: int
    killed: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Within the first half of the lines: the run must still be going.
        self.marks = [self.lines * (i + 1) // (2 * self.kills + 2) for i in range(self.kills)]
        self.rng = random.Random(self.seed)

    def step(self, run: Any, line: int) -> None:
        """An output of line ``line`` arrived: kill a worker if it is time."""
        while self.marks and line >= self.marks[0]:
            self.marks.pop(0)
            # Rather a stage with an item in hand (run.stats "busy"): killing
            # a worker that waits for input shows less. run.pids() is a
            # snapshot: the workers already killed may be in it still.
            stats = run.stats
            stages = [s for s in STAGES if stats[s]["busy"]] or STAGES
            dead = {pid for _, pid in self.killed}
            live = [(s, pid) for s in stages for pid in run.pids(s) if pid not in dead]
            if not live:
                continue  # the run is ending: no worker left to kill
            stage, pid = self.rng.choice(live)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it had just left
                continue
            self.killed.append((stage, pid))


# ------------------------------------------------------------------- run --
@dataclass
class Outcome:
    """What the pipeline produced, and what it says about itself."""

    totals: Counter[str] = field(default_factory=Counter)
    keys: set[Key] = field(default_factory=set)
    duplicates: list[Key] = field(default_factory=list)
    out_of_order: int = 0
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[tuple[Any, str]] = field(default_factory=list)
    fed: int = 0
    seconds: float = 0.0


def run_pipeline(args: argparse.Namespace, lines: Iterable[str], poison_at: int | None,
                 chaos: Chaos | None) -> Outcome:
    """Run the pipeline over ``lines`` and gather its outputs."""
    out = Outcome()
    w = args.workers

    def source() -> Iterator[Line]:
        for item in numbered(lines, poison_at):
            out.fed += 1
            yield item

    p = shmring.Pipeline("wordfreq")
    (p.source(source())
     # A short first edge keeps the outputs close behind the source, so the
     # workers are still busy when --chaos kills them.
     .map(parse, workers=w, name="parse", max_inflight=64)
     .filter(functools.partial(keep, lang=args.lang), workers=w, name="filter")
     .flat_map(split, workers=w, name="split")
     .map(count, workers=w, name="count", init=functools.partial(Tokenizer, args.cost / 1e3),
          timeout=args.timeout, ordered=args.ordered))
    t0 = time.monotonic()
    last: Key = ()
    with p.run(on_error="dead_letter", progress=args.progress) as run:
        for n, k, counts in run:
            key = ("paragraph", n, k)
            if key in out.keys:
                out.duplicates.append(key)
            out.keys.add(key)
            out.totals.update(counts)
            if key < last:
                out.out_of_order += 1
            last = key
            if chaos is not None:
                chaos.step(run, n)
    out.seconds = time.monotonic() - t0
    out.stats = run.stats
    out.dead_letters = run.dead_letters
    return out


def dead_key(item: Any) -> Key:
    """Where a dead letter's item came from: its line, or its paragraph."""
    if isinstance(item, tuple) and len(item) == 2:
        return ("line", item[0])
    if isinstance(item, tuple) and len(item) == 3:
        return ("paragraph", item[0], item[1])
    if isinstance(item, dict):
        return ("line", item.get("n"))
    return ("item", repr(item))


# ---------------------------------------------------------------- checking --
@dataclass
class Reference:
    """The same count done in this process alone, one item after another."""

    totals: Counter[str] = field(default_factory=Counter)
    keys: set[Key] = field(default_factory=set)
    dead: set[Key] = field(default_factory=set)  # items expected to be given up


def reference(lines: Iterable[str], poison_at: int | None, lang: str) -> Reference:
    """Count in one process with the same stage functions: what every run
    must find, whichever workers die."""
    ref = Reference()
    tok = Tokenizer()
    for line in numbered(lines, poison_at):
        try:
            doc = parse(line)
        except Exception:  # what on_error="dead_letter" gives up
            ref.dead.add(("line", line[0]))
            continue
        if not keep(doc, lang):
            continue
        for par in split(doc):
            if tok.crashes(par[2]):
                ref.dead.add(("paragraph", par[0], par[1]))
                continue
            n, k, counts = count(par, tok)
            ref.keys.add(("paragraph", n, k))
            ref.totals.update(counts)
    return ref


def problems(out: Outcome, ref: Reference, ordered: bool) -> list[str]:
    """Every way the run differs from the single-process count (none: verified)."""
    found = []
    if out.duplicates:
        found.append(f"{len(out.duplicates)} paragraphs counted twice, e.g. {out.duplicates[0]}")
    missing, extra = ref.keys - out.keys, out.keys - ref.keys
    if missing:
        found.append(f"{len(missing)} paragraphs never counted, e.g. {min(missing)}")
    if extra:
        found.append(f"{len(extra)} paragraphs that should not be there, e.g. {min(extra)}")
    if out.totals != ref.totals:
        diff = sorted(w for w in ref.totals.keys() | out.totals.keys()
                      if ref.totals[w] != out.totals[w])
        w = diff[0]
        found.append(f"{len(diff)} word totals differ, e.g. {w!r}: {out.totals[w]} "
                     f"instead of {ref.totals[w]}")
    dead = {dead_key(item) for item, _ in out.dead_letters}
    if dead != ref.dead:
        found.append(f"dead letters {sorted(dead, key=repr)} instead of "
                     f"{sorted(ref.dead, key=repr)}")
    if ordered and out.out_of_order:
        found.append(f"{out.out_of_order} outputs arrived out of source order")
    return found


# ----------------------------------------------------------------- report --
def summary(args: argparse.Namespace, out: Outcome, chaos: Chaos | None,
            found: list[str]) -> dict[str, Any]:
    """The result as plain data (what ``--json`` prints)."""
    return {
        "lines": out.fed,
        "documents": len({key[1] for key in out.keys}),
        "paragraphs": len(out.keys),
        "words": sum(out.totals.values()),
        "distinct": len(out.totals),
        # by count, ties by word: the same whatever order the outputs came in
        "top": sorted(out.totals.items(), key=lambda wn: (-wn[1], wn[0]))[:args.top],
        "workers": args.workers,
        "ordered": args.ordered,
        "seconds": round(out.seconds, 3),
        "stats": out.stats,
        "dead_letters": [{"item": json.loads(json.dumps(item, default=repr)), "reason": why}
                         for item, why in sorted(out.dead_letters, key=_by_line)],
        "chaos": None if chaos is None else {
            "requested": chaos.kills,
            "killed": [{"stage": s, "pid": pid} for s, pid in chaos.killed]},
        "verified": not found,
        "problems": found,
    }


def describe(item: Any) -> str:
    """A dead letter's item, briefly."""
    key = dead_key(item)
    where = {"line": "line {1}", "paragraph": "line {1} paragraph {2}"}.get(key[0], "{1}")
    return where.format(*key)


def report(s: dict[str, Any], lang: str) -> None:
    """The summary for a reader."""
    which = "in all languages" if lang == "all" else f"in {lang}"
    print(f"{s['lines']} lines, {s['documents']} documents {which}, {s['paragraphs']} "
          f"paragraphs, {s['words']} words ({s['distinct']} distinct) in {s['seconds']:.2f} s")
    if s["top"]:
        width = max(len(w) for w, _ in s["top"])
        print("top words:")
        for rank, (w, n) in enumerate(s["top"], 1):
            print(f"  {rank:>2}. {w:<{width}} {n:>7}")
    print(f"{'stage':<8}{'in':>8}{'out':>8}{'redelivered':>13}{'dead':>6}{'restarts':>10}"
          f"{'p50 ms':>9}")
    for name, st in s["stats"].items():
        p50 = "-" if st["p50_s"] is None else f"{st['p50_s'] * 1e3:.2f}"
        print(f"{name:<8}{st['in']:>8}{st['out']:>8}{st['redelivered']:>13}"
              f"{st['dead_lettered']:>6}{st['restarts']:>10}{p50:>9}")
    for d in s["dead_letters"]:
        print(f"dead letter: {describe(_tuple(d['item']))}: {d['reason']}")
    if s["chaos"] is not None:
        c = s["chaos"]
        by = Counter(k["stage"] for k in c["killed"])
        where = ", ".join(f"{stage} {n}" for stage, n in sorted(by.items()))
        print(f"chaos: killed {len(c['killed'])} of {c['requested']} workers"
              + (f" ({where})" if where else ""))
    if s["verified"]:
        print(f"verified: totals match a single-process count "
              f"({s['paragraphs']} paragraphs, each counted once)")
    for problem in s["problems"]:
        print(f"NOT verified: {problem}")


def _by_line(dead: tuple[Any, str]) -> tuple[int, int]:
    """Dead letters in source order: by line, then paragraph."""
    key = dead_key(dead[0])
    if not isinstance(key[1], int):
        return (-1, -1)
    return (key[1], key[2] if len(key) > 2 else -1)


def _tuple(item: Any) -> Any:
    return tuple(item) if isinstance(item, list) else item


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(
        description="Count word frequencies of a JSON Lines corpus with a shmring pipeline, "
                    "and check them against a single-process count.")
    ap.add_argument("corpus", nargs="?",
                    help='a JSON Lines file, one document a line ("-": stdin)')
    ap.add_argument("--generate", type=int, metavar="N",
                    help="count a generated corpus of N documents instead of a file")
    ap.add_argument("--seed", type=int, default=1, help="of --generate and --chaos (default 1)")
    ap.add_argument("--workers", type=int, default=2, help="workers per stage (default 2)")
    ap.add_argument("--lang", default="en", help='documents to count (default en; "all")')
    ap.add_argument("--ordered", action="store_true", help="outputs in source order")
    ap.add_argument("--chaos", type=int, default=0, metavar="K",
                    help="SIGKILL K random workers while the run goes")
    ap.add_argument("--poison", action="store_true",
                    help="add a document that kills every worker that tokenizes it")
    ap.add_argument("--cost", type=float, default=0.0, metavar="MS",
                    help="extra milliseconds per paragraph in the count stage, a stand-in "
                         "for heavier work (default 0)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds a paragraph may take in count (default 30)")
    ap.add_argument("--top", type=int, default=10, help="how many top words (default 10)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--progress", action="store_true", help="a progress line on stderr")
    args = ap.parse_args(argv)
    if (args.corpus is None) == (args.generate is None):
        ap.error("give a corpus file or --generate N (one of them)")
    if args.generate is not None and args.generate < 0:
        ap.error("--generate needs N >= 0")
    if not 1 <= args.workers <= 200 or args.chaos < 0 or args.top < 1 or args.cost < 0:
        ap.error("--workers 1..200, --chaos >= 0, --cost >= 0 and --top >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the count, check it, print the summary; 0 if verified, else 1."""
    args = parse_args(argv)
    try:
        lines, total = opener(args)
    except OSError as e:
        print(f"wordfreq: cannot read {args.corpus}: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.chaos and total is None:
        print("wordfreq: --chaos spreads its kills over the lines: give a file or --generate",
              file=sys.stderr)
        return 2
    # The poison goes in the middle (first, if the length is not known).
    poison_at = (1 if total is None else total // 2 + 1) if args.poison else None
    chaos = None if total is None or not args.chaos else Chaos(args.chaos, total, args.seed)
    try:
        out = run_pipeline(args, lines(), poison_at, chaos)
    except KeyboardInterrupt:
        print("wordfreq: interrupted", file=sys.stderr)
        return 130
    except shmring.ShmringError as e:  # RemoteError: a stage could not run at all
        print(f"wordfreq: {e}", file=sys.stderr)
        return 1
    found = problems(out, reference(lines(), poison_at, args.lang), args.ordered)
    s = summary(args, out, chaos, found)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        report(s, args.lang)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
