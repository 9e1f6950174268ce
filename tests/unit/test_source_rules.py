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
