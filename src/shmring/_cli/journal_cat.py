"""``shmring cat DIR``: print a journal's records, one a line.

A table line is ``SEQ<tab>SIZE<tab>KIND<tab>CONTENT`` (``shown.py`` says how
each kind is shown); ``--json`` prints JSON Lines with the exact bytes.
``cat`` only reads: it writes no record and moves no named cursor, so it
can run beside a live writer (``--follow``
prints new records as they are appended, until SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import sys

from .._errors import Timeout
from .._journal import Journal
from . import args as _types
from .shown import classify, json_record, text_line
from .stopping import POLL, stop_on_signals

HELP = """\
Print the records of the journal in DIR, one a line: SEQ, SIZE, KIND and the
content. Objects that send_obj/append_obj wrote as plain values are decoded
(obj); pickled objects are decoded only with --unpickle (unpickling runs code
the journal names: use it on journals you trust); anything else is shown as a
bytes literal with every unprintable byte escaped (bytes). --json prints one
JSON object per record with the exact bytes in base64."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring cat``."""
    p.description = HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("dir", metavar="DIR", help="the journal's directory")
    p.add_argument("--from", dest="from_seq", type=_types.seq_number, metavar="N",
                   help="first sequence number to print (default: the journal's first)")
    p.add_argument("--count", type=_types.positive_int, metavar="N",
                   help="print at most N records")
    p.add_argument("--json", action="store_true", help="JSON Lines instead of a table")
    p.add_argument("--unpickle", action="store_true",
                   help="decode pickled objects too (runs code from the journal)")
    p.add_argument("--width", type=int, default=120, metavar="CHARS",
                   help="cut the content column at this many characters (0: never; "
                   "default 120); --json is never cut")
    p.add_argument("--follow", "-f", action="store_true",
                   help="after the last record, print new ones as they are appended, "
                   "until SIGINT/SIGTERM")


def run(args: argparse.Namespace) -> int:
    """Print the records; 0 when done."""
    j = Journal.open(args.dir)
    try:
        end = None if args.follow else j.next_seq
        out = sys.stdout
        shown = 0
        with j.reader(from_seq=args.from_seq) as reader, stop_on_signals() as stop:
            while not stop.requested and (end is None or reader.seq < end) and (
                    args.count is None or shown < args.count):
                try:
                    seq, data = reader.read(timeout=POLL)
                except Timeout:
                    continue
                record = classify(data, unpickle=args.unpickle)
                if args.json:
                    out.write(json.dumps(json_record(seq, record)) + "\n")
                else:
                    out.write(text_line(seq, record, args.width) + "\n")
                if args.follow:
                    out.flush()
                shown += 1
    finally:
        j.close()
    return 0
