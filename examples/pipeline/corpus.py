"""A made-up corpus for ``wordfreq.py``: JSON Lines documents, one a line,
the same for the same seed, so a run can be checked and repeated without
shipping data files.

Each line is ``{"id": "doc-000042", "lang": "en", "text": "..."}``; the text
is one to four paragraphs separated by a blank line. Most documents are
English, some German and French (so a language filter has something to
drop). Words are drawn with Zipf-like weights, as in real text: a few are
very common, most are rare. Run it to write a corpus file::

    $ python examples/pipeline/corpus.py 2000 > corpus.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections.abc import Iterator

#: A stand-in for a crash in native code: the tokenizer of ``wordfreq.py``
#: kills its own process (SIGKILL) when a paragraph contains this.
CRASH_TRIGGER = "\x00crash-the-tokenizer\x00"

_EN = ("""
the of and to a in is that it was for on with as be by at this have from or had not but are
an they which one you were all we her she there been his would when their if will more no out
so said what up its about into than them can only other new some could these two may then do
""", """
time river water city light house night story ship road garden letter morning winter mountain
village market window forest island bridge station school doctor music paper harbour lantern
orchard meadow kitchen library people world life day year work state man hand place week
company system group number problem fact point government home water room mother area money
family question student night country child book eye job word business issue side kind head
friend father power hour game line end member law car name president team minute idea body
information back parent face others level office door health person art war history party
result change reason research girl guy moment air teacher force education foot boy age policy
process music market sense nation plan college interest death experience effect class control
care field development role effort rate heart drug show leader light voice wife police mind
price report decision son view relationship town road arm difference value building action
model season society tax director position player record paper space ground form event
""")
_DE = ("""
der die und in den von zu das mit sich des auf ist im dem nicht ein eine als auch es an
""", """
stadt fluss haus wasser nacht brücke garten schule bahnhof wald morgen winter berg dorf markt
fenster insel brief arzt musik zeit leben welt kind buch freund
""")
_FR = ("""
de la le et les des en un du une que est pour qui dans par plus pas au sur ne se ce il
""", """
ville rivière maison eau nuit pont jardin école gare forêt matin hiver montagne village marché
fenêtre île lettre médecin musique temps vie monde enfant livre ami
""")
#: (language, (stop words, content words), share of the documents)
_LANGS = (("en", _EN, 0.7), ("de", _DE, 0.15), ("fr", _FR, 0.15))
#: The share of a sentence's words that are stop words.
_STOP_SHARE = 0.45


def _zipf(n: int) -> list[float]:
    """Cumulative weights 1/rank for ``n`` words."""
    return list(itertools.accumulate(1.0 / (r + 1) for r in range(n)))


def _vocabulary(texts: tuple[str, str]) -> tuple[list[str], list[float], list[str], list[float]]:
    stop, content = (list(dict.fromkeys(t.split())) for t in texts)
    return stop, _zipf(len(stop)), content, _zipf(len(content))


def documents(n: int, seed: int = 1) -> Iterator[str]:
    """``n`` JSON Lines documents (without the newline), the same for the
    same ``seed``."""
    rng = random.Random(seed)
    langs = [(lang, _vocabulary(texts)) for lang, texts, _ in _LANGS]
    share = list(itertools.accumulate(w for _, _, w in _LANGS))
    for i in range(n):
        lang, (stop, stop_cum, content, content_cum) = rng.choices(langs, cum_weights=share)[0]
        paragraphs = []
        for _ in range(rng.randint(1, 4)):
            sentences = []
            for _ in range(rng.randint(2, 6)):
                k = rng.randint(4, 14)
                n_stop = sum(rng.random() < _STOP_SHARE for _ in range(k))
                words = (rng.choices(stop, cum_weights=stop_cum, k=n_stop)
                         + rng.choices(content, cum_weights=content_cum, k=k - n_stop))
                rng.shuffle(words)
                sentences.append(" ".join(words).capitalize() + ".")
            paragraphs.append(" ".join(sentences))
        yield json.dumps({"id": f"doc-{i:06d}", "lang": lang, "text": "\n\n".join(paragraphs)},
                         ensure_ascii=False)


def poison(i: int) -> str:
    """A document whose one paragraph crashes the tokenizer."""
    return json.dumps({"id": f"poison-{i:06d}", "lang": "en",
                       "text": f"A perfectly ordinary sentence, until {CRASH_TRIGGER} here."})


def main(argv: list[str] | None = None) -> int:
    """Write a corpus to stdout: ``corpus.py N [--seed S]``."""
    ap = argparse.ArgumentParser(description="Write a made-up JSON Lines corpus to stdout.")
    ap.add_argument("n", type=int, help="documents to write")
    ap.add_argument("--seed", type=int, default=1, help="the same seed, the same corpus")
    args = ap.parse_args(argv)
    for line in documents(args.n, args.seed):
        sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
