"""Who holds an owner word of a metrics region (``_layout``: pid, start
time and PID namespace tag in one word) and whether it still runs.

A pid means something only in its PID namespace: a word whose tag is the
namespace our ``/proc`` shows is judged there; any other through a
``_proc.Census`` (a namespace below ours is visible, with its pids
translated; from the initial namespace every process is), and a word
neither can judge is presumed alive, so that a live process of a container
never has its slab folded, its fold lock or daemon word taken, or its entry
freed by a process of the host (nor the other way round).
"""

from __future__ import annotations

from .._proc import Census, innermost, is_zombie, ns_of, proc_namespace, start_time
from . import _layout as M

#: Owner words of other namespaces found alive, and their pid in our /proc:
#: checked again cheaply (start time, namespace, pid there) instead of a
#: census, which walks every process of the machine.
_FOUND: dict[int, int] = {}


class Judge:
    """Whether the processes of owner words still run, judged only where
    their pids mean something: by our ``/proc`` if the word's namespace tag
    is the one it shows, else through one ``Census`` (walked at the first
    word that needs it: make the judge after reading the words), and
    presumed alive if neither can tell (a namespace not visible from here)."""

    def __init__(self) -> None:
        self._census: Census | None = None

    def alive(self, word: int) -> bool:
        """True unless the process of owner word ``word`` is known gone."""
        if word == 0:
            return False
        word &= ~M.WRITING
        pid, start, tag = M.owner_pid(word), M.owner_start(word), M.owner_ns_tag(word)

        def started(st: int) -> bool:
            return st % M.START_LIMIT == start

        local = proc_namespace()
        if tag and local and tag == M.ns_tag(local):
            st = start_time(pid)
            return st is not None and started(st) and not is_zombie(pid)
        ours = _FOUND.get(word)
        if ours is not None:
            st = start_time(ours)
            if st is not None and started(st) and innermost(ours) == pid and \
                    (not tag or M.ns_tag(ns_of(ours)) == tag) and not is_zombie(ours):
                return True
            del _FOUND[word]
        if self._census is None:
            self._census = Census.take()
        ns = (lambda n: M.ns_tag(n) == tag) if tag else None
        ours = self._census.where(pid, started, ns)
        if ours is not None:
            if len(_FOUND) > 4096:
                _FOUND.clear()
            _FOUND[word] = ours
            return True
        return self._census.judge_where(pid, started, ns) is not False


def owner_alive(word: int) -> bool:
    """True unless the process of owner word ``word`` is known to be gone
    (one word: :class:`Judge` for several)."""
    return Judge().alive(word)
