"""Fences that name their partner: every ordered atomic operation in csrc/
(acquire, release, seq-cst: the wrappers of atomics.h, any direct atomic_*
call, and the futex wait/wake calls) carries a ``SYNC(tag)`` comment, and
every tag appears at two sites at least, so each end names the other.

A tag counts for a call when it is on the call's line, in the comment block
directly above it, or within the three lines above (one comment may cover a
few consecutive calls). Relaxed operations need no tag. The wrappers' own
definitions in atomics.h are not calls and are skipped.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

CSRC = Path(__file__).resolve().parents[2] / "src" / "shmring" / "csrc"

ORDERED = re.compile(
    r"\b(ld_acq|st_rel|ld_sc|st_sc|cas_sc|fadd_sc|ld32_acq|ld32_sc|st32_sc|cas32_sc|fadd32_sc|fsub32_sc"
    r"|fence_sc|fence_acq|fence_rel|atomic_\w+|futex_wait_word|futex_wake_word)\s*\("
)
TAG = re.compile(r"SYNC\(([A-Za-z0-9_.:-]+)\)")
# Only type words before the name: a definition or a declaration, not a call.
DECLARATION = re.compile(
    r"\s*((static|inline|extern|const|unsigned|signed|int|void|long|char|u?int\d+_t|size_t)\b\s*\**\s*)+"
)
WINDOW = 3


def split_comments(text: str) -> list[tuple[str, str]]:
    """Each line of C source as (code, comment text), comments stripped from code."""
    out: list[tuple[str, str]] = []
    in_block = False
    for line in text.split("\n"):
        code, comment, i = [], [], 0
        while i < len(line):
            if in_block:
                end = line.find("*/", i)
                if end < 0:
                    comment.append(line[i:])
                    i = len(line)
                else:
                    comment.append(line[i:end])
                    i, in_block = end + 2, False
            elif line.startswith("/*", i):
                in_block, i = True, i + 2
            elif line.startswith("//", i):
                comment.append(line[i + 2 :])
                i = len(line)
            elif line[i] == '"':  # a string literal: not a comment, not code to scan
                j = i + 1
                while j < len(line) and line[j] != '"':
                    j += 2 if line[j] == "\\" else 1
                code.append('""')
                i = j + 1
            else:
                code.append(line[i])
                i += 1
        out.append(("".join(code), "".join(comment)))
    return out


def comment_blocks(lines: list[tuple[str, str]]) -> dict[int, str]:
    """For each line with a comment, the text of its whole comment block: a run
    of lines with comments, each one but the first holding no code."""
    blocks: dict[int, str] = {}
    run: list[int] = []
    for n, (code, comment) in enumerate([*lines, ("end", "")]):
        if comment.strip() and (not run or not code.strip()):
            run.append(n)
            continue
        text = " ".join(lines[k][1] for k in run)
        blocks.update({k: text for k in run})
        run = [n] if comment.strip() else []
    return blocks


def scan(files: dict[str, str]) -> tuple[list[str], list[str]]:
    """(untagged ordered calls, tags found at one site only) over {name: source}."""
    untagged: list[str] = []
    sites: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for name, text in sorted(files.items()):
        lines = split_comments(text)
        for n, (_code, comment) in enumerate(lines):
            for tag in TAG.findall(comment):
                sites[tag].add((name, n))
        blocks = comment_blocks(lines)
        for n, (code, comment) in enumerate(lines):
            calls = [
                m for m in ORDERED.finditer(code) if not DECLARATION.fullmatch(code[: m.start()])
            ]
            if not calls:
                continue
            near = {comment} | {blocks[k] for k in range(max(0, n - WINDOW), n) if k in blocks}
            if not any(TAG.search(c) for c in near):
                untagged.append(f"{name}:{n + 1}: {code.strip()}")
    unpaired = sorted(f"{tag} at {sorted(s)}" for tag, s in sites.items() if len(s) < 2)
    return untagged, unpaired


def csrc_files() -> dict[str, str]:
    files = {}
    for p in sorted(CSRC.rglob("*")):
        if p.suffix in (".c", ".h") and p.name != "atomics.h":
            files[str(p.relative_to(CSRC))] = p.read_text()
    return files


def test_the_scanner_can_fail() -> None:
    good = (
        "void a(void) {\n    /* SYNC(pub): release; pairs with the acquire in b */\n"
        "    st_rel(p, 0, 1);\n}\n"
        "int b(void) {\n    return ld_acq(p, 0); /* SYNC(pub): pairs with a */\n}\n"
        "static inline uint64_t ld_acq(void *b, uint64_t off);\n"
        "/* not a call: ld_acq(p, 0) in a comment */ int c = 0;\n"
    )
    assert scan({"good.c": good}) == ([], [])
    lonely = "void a(void) {\n    fence_sc(); /* SYNC(alone): nobody pairs with this */\n}\n"
    assert scan({"lonely.c": lonely})[1] == ["alone at [('lonely.c', 1)]"]
    bare = "void a(void) {\n    x = cas_sc(p, 0, &e, 1);\n    y = ld_rlx(p, 8);\n}\n"
    assert scan({"bare.c": bare}) == (["bare.c:2: x = cas_sc(p, 0, &e, 1);"], [])
    far = "/* SYNC(t): far */\n\n\n\nint x;\nv = ld_acq(p, 0); /* SYNC(t) */\nw = ld_sc(p, 0);\n"
    assert scan({"far.c": far})[0] == []  # the second is within three lines of a tag
    far2 = "/* SYNC(t): x */\nint a;\nint b;\nint c;\nv = ld_acq(p, 0);\n/* SYNC(t) */\n"
    assert scan({"far2.c": far2})[0] == ["far2.c:5: v = ld_acq(p, 0);"]
    block = "/* SYNC(u): a long\n * comment\n * ending here */\na = 1;\nv = ld_acq(p, 0);\n"
    assert scan({"block.c": block + "/* SYNC(u) */"}) == ([], [])


def test_every_ordered_atomic_names_its_partner() -> None:
    files = csrc_files()
    assert any(ORDERED.search(t) for t in files.values()), "the scan found no atomic call at all"
    untagged, unpaired = scan(files)
    assert not untagged, "ordered atomics without a SYNC(tag) comment:\n" + "\n".join(untagged)
    assert not unpaired, "SYNC tags named at one site only:\n" + "\n".join(unpaired)
