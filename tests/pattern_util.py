"""The ring patterns as the tests parametrise over them, read from shmring's
one table of pattern traits (``_layout.TRAITS``) so no test restates which
pattern takes many producers, many consumers, or can be lossy."""

from __future__ import annotations

from shmring._layout import TRAITS

#: Every (pattern, lossy) combination a channel can be created with, in the
#: table's order: each pattern lossless, then the lossy form of each that has one.
KINDS: list[tuple[str, bool]] = [(name, False) for name in TRAITS] + [
    (name, True) for name, t in TRAITS.items() if t.can_be_lossy]
#: Test ids of KINDS: the pattern's name, "-lossy" added for a lossy one.
KIND_IDS: list[str] = [name + ("-lossy" if lossy else "") for name, lossy in KINDS]


def patterns(**want: bool) -> list[str]:
    """Names of the patterns whose traits have the values given, in the
    table's order: ``patterns(multi_producer=True) == ["mpsc", "mpmc"]``."""
    return [name for name, t in TRAITS.items()
            if all(getattr(t, trait) == value for trait, value in want.items())]
