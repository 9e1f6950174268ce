"""Rules on the Python files themselves: every module of the package opens
with a docstring saying what it is for, and no file grows past about 600
lines (one concept per module; the C files have the same rule in
test_csrc_rules.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "shmring"
MAX_LINES = 600
#: Test modules may run a little longer: a contract's cases stay together.
MAX_TEST_LINES = 650

MODULES = sorted(PACKAGE.rglob("*.py"))
TESTS = sorted((ROOT / "tests").rglob("*.py"))


def test_the_files_are_found() -> None:
    assert (PACKAGE / "_channel" / "channel.py") in MODULES
    assert len(TESTS) > 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_says_what_it_is_for(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.split()) >= 4, f"{path.relative_to(ROOT)} has no docstring"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_not_too_long(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (at most {MAX_LINES})"


def test_test_modules_are_not_too_long() -> None:
    long = {str(p.relative_to(ROOT)): n for p in TESTS
            if (n := len(p.read_text().splitlines())) > MAX_TEST_LINES}
    assert not long, f"test modules over {MAX_TEST_LINES} lines: {long}"


#: Offsets of attach-slot words and of the exclusive-role owner words: only
#: the attach table (``_region/slots.py``) may name them.
SLOT_WORDS = frozenset({
    "slot_offset", "SLOT_PID", "SLOT_START_TIME", "SLOT_ROLE", "SLOT_STATE", "SLOT_CLAIM_POS",
    "SLOT_CLAIM_LEN", "SLOT_CURSOR", "SLOT_MESSAGES", "SLOT_BYTES", "SLOT_MISSED",
    "SLOT_LAST_MSGNO", "SLOT_RECOVERING", "OFF_PRODUCER_OWNER", "OFF_CONSUMER_OWNER",
})
SLOT_OWNERS = {PACKAGE / "_region" / "slots.py", PACKAGE / "_layout.py"}


def slot_word_uses(tree: ast.AST) -> set[str]:
    """Names of slot words a module reads as attributes (``L.SLOT_PID``) or
    imports by name."""
    out = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in SLOT_WORDS}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            out |= {a.name for a in n.names if a.name in SLOT_WORDS}
    return out


def test_slot_word_finder_finds_them() -> None:
    tree = ast.parse("from .._layout import SLOT_CURSOR\nx = L.slot_offset(3) + L.SLOT_PID\n")
    assert slot_word_uses(tree) == {"SLOT_CURSOR", "slot_offset", "SLOT_PID"}


def test_only_the_attach_table_touches_slot_words() -> None:
    assert set(MODULES) >= SLOT_OWNERS
    found = {str(p.relative_to(PACKAGE)): sorted(uses) for p in MODULES
             if p not in SLOT_OWNERS and (uses := slot_word_uses(ast.parse(p.read_text())))}
    assert not found, f"slot words outside _region/slots.py: {found}"
