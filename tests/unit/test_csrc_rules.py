"""The layers of csrc/, as rules on the files themselves.

ring/ is pure C (never Python.h, never the CPython glue in py/); value/ may
walk Python objects but never reaches into py/ either; no C file grows past
600 lines; every C file opens with a comment saying what it is for.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "src" / "shmring" / "csrc"
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
MAX_LINES = 600

C_FILES = sorted(p for p in CSRC.rglob("*") if p.suffix in (".c", ".h"))


def includes(path: Path) -> list[str]:
    """What path includes, directly or through the headers of csrc/ it includes."""
    seen: list[str] = []
    todo = [path]
    while todo:
        for inc in INCLUDE.findall(todo.pop().read_text()):
            if inc in seen:
                continue
            seen.append(inc)
            if (CSRC / inc).is_file():
                todo.append(CSRC / inc)
    return seen


def under(folder: str) -> list[Path]:
    return [p for p in C_FILES if p.relative_to(CSRC).parts[0] == folder]


def test_the_layers_are_there() -> None:
    for folder in ("ring", "value", "py"):
        assert under(folder), f"csrc/{folder}/ has no C files"
    assert INCLUDE.findall('#include "py/core.h"\n# include <Python.h>\n') == [
        "py/core.h",
        "Python.h",
    ]


@pytest.mark.parametrize("folder", ["ring", "value"])
def test_ring_and_value_never_include_the_glue(folder: str) -> None:
    bad = [
        f"{p.relative_to(CSRC)}: {inc}"
        for p in under(folder)
        for inc in includes(p)
        if inc.startswith("py/") or inc in ("core.h", "objects.h", "lock.h")
    ]
    assert not bad, "files that include CPython glue headers:\n" + "\n".join(bad)


def test_ring_is_pure_c() -> None:
    bad = [
        f"{p.relative_to(CSRC)}: {inc}"
        for p in under("ring")
        for inc in includes(p)
        if inc in ("Python.h", "structmember.h", "pythread.h") or inc.startswith("value/")
    ]
    assert not bad, "ring/ must not include Python (nor the value layer above it):\n" + "\n".join(
        bad
    )


def test_no_c_file_is_over_600_lines() -> None:
    sizes = {str(p.relative_to(CSRC)): len(p.read_text().splitlines()) for p in C_FILES}
    long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not long, f"C files over {MAX_LINES} lines: {long}"


def test_every_c_file_opens_with_what_it_is_for() -> None:
    bad = []
    for p in C_FILES:
        text = p.read_text().lstrip()
        if not text.startswith("/*"):
            bad.append(f"{p.relative_to(CSRC)}: does not open with a comment")
            continue
        first = text[2 : text.index("*/")]
        words = re.sub(r"[\s*]+", " ", first).strip()
        if len(words.split()) < 6:
            bad.append(f"{p.relative_to(CSRC)}: its opening comment says too little: {words!r}")
    assert not bad, "\n".join(bad)
