"""Docs that run: every Python example of the README files and of the public
docstrings (see ``doc_blocks.py`` for which, and for how a fragment is
marked) runs as written, each in a fresh interpreter, in an empty temporary
directory, with a timeout, and leaves nothing in /dev/shm.

Each block runs in a namespace of its own (``$SHMRING_NAMESPACE``), so the
fixed names the docs use ("jobs", "frames") never meet another test's, and
the leak check looks at exactly that block's segments. A region the block
leaves to its supervisor must be gone within a few seconds of its exit, as
the README promises.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from doc_blocks import ROOT, Block, all_blocks, docstring_blocks, markdown_blocks

TIMEOUT = 60.0
GONE_WITHIN = 10.0  # seconds for the supervisor to remove what a block left
BLOCKS = all_blocks()
RUN = [b for b in BLOCKS if b.fragment is None]
FRAGMENTS = [b for b in BLOCKS if b.fragment is not None]


def _segments(namespace: str) -> list[str]:
    return sorted(e for e in os.listdir("/dev/shm") if e.startswith(f"shmring.{namespace}."))


def _run(block: Block, tmp: Path) -> subprocess.CompletedProcess[str]:
    namespace = f"doc-{os.getpid()}-{abs(hash(block.where)) % 10**8}"
    env = dict(os.environ, SHMRING_NAMESPACE=namespace, SHMRING_SUPERVISOR_IDLE="1",
               PYTHONDONTWRITEBYTECODE="1")
    if block.doctest:
        script = tmp / "block.txt"
        cmd = [sys.executable, "-m", "doctest", str(script)]
    else:
        script = tmp / "block.py"
        cmd = [sys.executable, str(script)]
    script.write_text(block.source)
    hung: str | None = None
    try:
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:  # run() has killed it
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        hung = f"{block.where}: still running after {TIMEOUT:.0f} s\n{err[-2000:]}"
    deadline = time.monotonic() + GONE_WITHIN
    while (left := _segments(namespace)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for entry in left:
        os.unlink("/dev/shm/" + entry)
    if hung is not None:
        pytest.fail(hung)
    assert not left, f"{block.where}: left in /dev/shm {GONE_WITHIN:.0f} s after it ended: {left}"
    return done


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    done = _run(block, tmp_path)
    assert done.returncode == 0, (
        f"{block.where}: exit status {done.returncode}\n--- stdout\n{done.stdout[-2000:]}"
        f"\n--- stderr\n{done.stderr[-4000:]}")


def test_the_blocks_are_found() -> None:
    readme = markdown_blocks(ROOT / "README.md")
    assert len(readme) >= 5, [b.where for b in readme]
    owners = {b.where.rsplit("(", 1)[-1].rstrip(")") for b in docstring_blocks()}
    assert {"shmring", "Queue", "SimpleQueue", "Channel", "Producer"} <= owners, owners


def test_fragments_are_few_and_say_why(capsys: pytest.CaptureFixture[str]) -> None:
    """Every block not run is listed (run ``pytest -s`` to see them) and has a
    reason; the count is pinned so a new fragment is a visible change here."""
    for b in FRAGMENTS:
        assert b.fragment and b.fragment.strip(), b.where
    with capsys.disabled():
        print(f"\n{len(FRAGMENTS)} documentation fragments not run "
              f"({len(RUN)} blocks run):")
        for b in FRAGMENTS:
            print(f"  {b.where}: {b.fragment}")
    assert len(FRAGMENTS) == 10, [b.where for b in FRAGMENTS]


def test_a_broken_block_fails_with_its_location(tmp_path: Path) -> None:
    bad = Block("README.md:1", "import shmring\nraise SystemExit(shmring.Nope)\n")
    done = _run(bad, tmp_path)
    assert done.returncode != 0 and "AttributeError" in done.stderr


def test_a_marked_markdown_block_is_a_fragment(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text("# t\n\n<!-- not run: needs a camera -->\n```python\nopen_camera()\n```\n\n"
                    "```python\nprint(1)\n```\n\n```bash\nls\n```\n")
    first, second = markdown_blocks(page)
    assert (first.fragment, first.source, first.where.endswith(":5")) == (
        "needs a camera", "open_camera()\n", True)
    assert second.fragment is None and second.source == "print(1)\n"
