"""One owner for every byte: csrc/layout.h defines each offset, width and flag
bit; the extension exports them all as ``_core.LAYOUT``; ``shmring._layout``
gives each one a typed name read from there, never a number written by hand.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from shmring import _core, _layout

PKG = Path(__file__).resolve().parents[2] / "src" / "shmring"
LAYOUT_H = PKG / "csrc" / "layout.h"
LAYOUT_PY = PKG / "_layout.py"

_DEFINE = re.compile(r"^#define\s+([A-Z][A-Z0-9_]*)\s+\S", re.M)


def _layout_reads() -> dict[str, ast.expr]:
    """Module-level ``NAME: Final[...] = value`` assignments of _layout.py."""
    tree = ast.parse(LAYOUT_PY.read_text())
    out: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            out[node.target.id] = node.value
    return out


def _read_key(value: ast.expr) -> str | None:
    """The key of a ``_L["KEY"]`` read, else None."""
    if (
        isinstance(value, ast.Subscript)
        and isinstance(value.value, ast.Name)
        and value.value.id == "_L"
        and isinstance(value.slice, ast.Constant)
        and isinstance(value.slice.value, str)
    ):
        return value.slice.value
    return None


def _is_literal_number(value: ast.expr) -> bool:
    """A number written out (``4096``, ``1 << 63``, ``-1``), not read from _core."""
    allowed = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)
    nodes = list(ast.walk(value))
    return all(isinstance(n, allowed) for n in nodes) and any(
        isinstance(n, ast.Constant) and isinstance(n.value, int) for n in nodes
    )


def test_the_literal_check_can_fail() -> None:
    assert _is_literal_number(ast.parse("1 << 63", mode="eval").body)
    assert not _is_literal_number(ast.parse('_L["LINE"]', mode="eval").body)


def test_every_layout_key_has_its_python_name() -> None:
    missing = [k for k in _core.LAYOUT if not hasattr(_layout, k)]
    assert not missing, f"_core.LAYOUT keys with no name in shmring._layout: {missing}"
    wrong = {
        k: (getattr(_layout, k), v) for k, v in _core.LAYOUT.items() if getattr(_layout, k) != v
    }
    assert not wrong, f"names in shmring._layout that differ from _core.LAYOUT: {wrong}"


def test_python_names_are_read_from_the_extension_by_their_own_key() -> None:
    reads = _layout_reads()
    for name, value in reads.items():
        key = _read_key(value)
        if name in _core.LAYOUT:
            assert key == name, f"_layout.{name} must be _L[{name!r}], not {ast.unparse(value)}"
        elif key is not None:
            raise AssertionError(f"_layout.{name} reads _L[{key!r}]: name it {key}")
    hand = [name for name, value in reads.items() if _is_literal_number(value)]
    assert not hand, f"numbers written by hand in _layout.py: {hand}"


def test_every_constant_of_layout_h_is_exported() -> None:
    defined = set(_DEFINE.findall(LAYOUT_H.read_text())) - {"SHMRING_LAYOUT_H"}
    missing = sorted(defined - set(_core.LAYOUT))
    assert not missing, f"layout.h constants not in _core.LAYOUT (py/module.c's table): {missing}"


def test_queue_control_block_fits_and_keeps_its_lines() -> None:
    L = _core.LAYOUT
    words = ["CTL_PUTS", "CTL_GETS", "CTL_NOTFULL_SEQ", "CTL_UNFINISHED", "CTL_JOIN_SEQ"]
    words.append("CTL_MAXSIZE")
    lines = [L[w] // L["LINE"] for w in words]
    assert lines == sorted(set(lines)), "each often-written control word sits on its own line"
    assert L["CTL_MAGIC"] + 8 <= L["CTL_BYTES"]
    assert L["SLOT_RECOVERING"] == 1 << 63
