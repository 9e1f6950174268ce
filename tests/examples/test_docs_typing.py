"""The README's Python blocks pass ``mypy --strict``, as a user's typed code
around them would: one mypy run over all of them (each block a module of its
own in a temporary directory, the mypy cache kept in pytest's cache so a
second run takes a second or two). mypy is in the ``test`` extra, so this
runs wherever the suite does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from doc_blocks import markdown_blocks, markdown_files


def test_readme_blocks_pass_mypy_strict(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    blocks = [b for path in markdown_files() for b in markdown_blocks(path) if b.fragment is None]
    assert blocks
    where = {}
    for i, b in enumerate(blocks):
        f = tmp_path / f"block_{i}.py"
        f.write_text(b.source)
        where[f.name] = b.where
    store = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    cache = store.mkdir("mypy-docs") if store is not None else tmp_path
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "", "--cache-dir",
         str(cache), "--no-error-summary", *sorted(where)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    def at(m: re.Match[str]) -> str:  # block_3.py:7 -> README.md:251
        path, first = where[m.group(1)].rsplit(":", 1)
        return f"{path}:{int(first) + int(m.group(2)) - 1}"

    report = re.sub(r"(block_\d+\.py):(\d+)", at, done.stdout)
    assert done.returncode == 0, f"mypy --strict on the README blocks:\n{report}{done.stderr}"
