"""The Python examples of the documentation, as blocks to run.

Where they come from: every ```python block of README.md, examples/README.md
and examples/*/README.md, and the literal blocks (``::``) and doctest blocks
(``>>>``) of the package docstring and of the docstring of every name in
``shmring.__all__``. Each block keeps where it was written (file and line),
so a failure points at the text a reader sees.

A block that is deliberately not runnable is a *fragment*, and says so where
it is written, never in a list hidden here:

- in Markdown, an HTML comment on the line right above the fence,
  ``<!-- not run: <reason> -->`` (GitHub does not render it; the source
  shows it);
- in a docstring, the paragraph that introduces the block ends with
  ``(fragment)::`` instead of ``::``, as in ``Example (fragment)::``.

The tests list and count fragments, so none hides a broken block silently.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import shmring

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^```(\S*)(.*)$")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->$")
_FRAGMENT_INTRO = re.compile(r"\(fragment\)::\s*$")


@dataclass(frozen=True)
class Block:
    """One example: its source text, where it is written, and, for a
    fragment, why it is not run."""

    where: str         # "README.md:42" or "src/shmring/_queue/queue.py:57 (Queue)"
    source: str
    doctest: bool = False
    fragment: str | None = None

    @property
    def id(self) -> str:
        """A short test id: the location without spaces."""
        return re.sub(r"[^A-Za-z0-9_.:/-]", "_", self.where)


def markdown_files() -> list[Path]:
    """The Markdown pages whose Python blocks must run."""
    return [ROOT / "README.md", ROOT / "examples" / "README.md",
            *sorted((ROOT / "examples").glob("*/README.md"))]


def markdown_blocks(path: Path) -> list[Block]:
    """The ```python blocks of one Markdown file, with their fragment marks."""
    lines = path.read_text().splitlines()
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if lang not in ("python", "py"):
            continue
        above = lines[start - 1].strip() if start else ""
        mark = _NOT_RUN.match(above)
        out.append(Block(f"{rel}:{start + 2}", "\n".join(body) + "\n",
                         fragment=mark.group(1) if mark else None))
    return out


def _docstring_owners() -> list[tuple[str, object]]:
    owners: list[tuple[str, object]] = [("shmring", shmring)]
    for name in shmring.__all__:
        obj = getattr(shmring, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            owners.append((name, obj))
    return owners


def _where(owner: object, label: str, doc: str, offset: int) -> str:
    """``file:line (label)`` of line ``offset`` of ``owner``'s docstring."""
    try:
        path = Path(inspect.getsourcefile(owner) or "")  # type: ignore[arg-type]
        src = path.read_text()
        first = src.index(doc.split("\n", 1)[0].strip())
        line = src.count("\n", 0, first) + 1 + offset
        return f"{path.relative_to(ROOT)}:{line} ({label})"
    except (TypeError, ValueError, OSError):
        return f"{label} docstring, line {offset + 1}"


def docstring_blocks() -> list[Block]:
    """The literal and doctest blocks of the public docstrings."""
    out: list[Block] = []
    for label, owner in _docstring_owners():
        raw = owner.__doc__
        if not raw or ("::" not in raw and ">>>" not in raw):
            continue
        lines = raw.expandtabs().splitlines()
        i = 0
        while i < len(lines):
            text = lines[i].rstrip()
            if text.lstrip().startswith(">>>"):
                start = i
                indent = len(text) - len(text.lstrip())
                while i < len(lines) and lines[i].strip():
                    i += 1
                body = "\n".join(ln[indent:] for ln in lines[start:i]) + "\n"
                out.append(Block(_where(owner, label, raw, start), body, doctest=True))
                continue
            if not text.endswith("::"):
                i += 1
                continue
            intro_indent = len(text) - len(text.lstrip())
            fragment = "marked (fragment)" if _FRAGMENT_INTRO.search(text) else None
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            start = i
            body_lines: list[str] = []
            while i < len(lines):
                ln = lines[i]
                if ln.strip() and len(ln) - len(ln.lstrip()) <= intro_indent:
                    break
                body_lines.append(ln)
                i += 1
            while body_lines and not body_lines[-1].strip():
                body_lines.pop()
            if body_lines:
                cut = min(len(ln) - len(ln.lstrip()) for ln in body_lines if ln.strip())
                body = "\n".join(ln[cut:] for ln in body_lines) + "\n"
                out.append(Block(_where(owner, label, raw, start), body, fragment=fragment))
    return out


def all_blocks() -> list[Block]:
    """Every block of the documentation, Markdown first."""
    blocks = [b for path in markdown_files() for b in markdown_blocks(path)]
    return blocks + docstring_blocks()
