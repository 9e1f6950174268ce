"""What the adapters of CPython's own multiprocessing tests share
(tests/cpython_pool, tests/cpython_queue): importing the standard library's
``test._test_multiprocessing`` (not vendored here) with a message that says
what is missing, and the check that each adapter runs or lists every test of
the classes it adapts."""

from __future__ import annotations

import importlib
import os
from typing import Any


def cpython_tests(folder: str) -> Any:
    """``test._test_multiprocessing``, or an ImportError that says how to get
    it (the suite does not skip without it)."""
    try:
        return importlib.import_module("test._test_multiprocessing")
    except ImportError as e:  # pragma: no cover - depends on the interpreter
        raise ImportError(
            f"tests/{folder} needs the standard library's test package "
            "(test._test_multiprocessing); install it (Debian/Ubuntu: "
            "libpython3.X-testsuite) or run these tests with a python.org/pyenv "
            "interpreter") from e


def check_coverage(cpy: Any, classes: tuple[str, ...], excluded: dict[str, str],
                   at_least: int) -> None:
    """Every ``test_*`` of ``classes`` is run or listed in ``excluded``, what
    is listed exists (so the list cannot go stale silently), and at least
    ``at_least`` are run."""
    names: set[str] = set()
    for base_name in classes:
        names |= {n for n in dir(getattr(cpy, base_name)) if n.startswith("test_")}
    assert set(excluded) <= names, sorted(set(excluded) - names)
    run = names - set(excluded)
    assert len(run) >= at_least, sorted(run)
    assert os.path.basename(cpy.__file__) == "_test_multiprocessing.py"
