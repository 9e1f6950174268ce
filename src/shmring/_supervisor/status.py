"""The supervisor's report of itself (``shmring supervisor --status``,
``shmring top``): its regions with their holders and its processes with what
they hold, JSON-ready and cut to fit one message."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from .deaths import Proc
from .regions import RegionTable


def report(namespace: str, regions: RegionTable, procs: Iterable[Proc],
           stats: Mapping[str, int], *, connections: int,
           limit: int | None = None) -> dict[str, Any]:
    """The report; with ``limit``, the lists of regions and processes are
    cut (``truncated``) to fit that many bytes of JSON; the counts are
    always whole."""
    st: dict[str, Any] = {
        "pid": os.getpid(),
        "namespace": namespace,
        "in_grace": regions.in_grace(),
        "stats": dict(stats),
        "regions": [
            {"segment": t.seg, "created_ns": t.created_ns, "persistent": t.persistent,
             "holders": [{"pid": k[0], "start_time": k[1], "count": n}
                         for k, n in t.holders.items()]}
            for t in regions
        ],
        "processes": [
            {"pid": p.pid, "lpid": p.lpid, "pidns": p.ns, "start_time": p.start,
             "connected": p.conn is not None,
             "holds": [{"segment": k[0], "created_ns": k[1], "count": n}
                       for k, n in p.holds.items()]}
            for p in procs
        ],
    }
    st["counts"] = {"regions": len(st["regions"]), "processes": len(st["processes"]),
                    "connections": connections}
    st["truncated"] = False
    while limit is not None and len(json.dumps(st)) > limit:
        st["truncated"] = True
        longest = max(("processes", "regions"), key=lambda k: len(st[k]))
        if not st[longest]:
            break
        del st[longest][len(st[longest]) // 2:]
    return st
