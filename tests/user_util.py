"""Another user, for real: a forked child that drops to uid/gid 65534 runs
a check and reports what happened. (The suite runs as root; the child
imports what it needs before dropping, since the interpreter's own files may
not be readable by nobody.)"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from typing import Any

NOBODY = 65534


def as_nobody(fn: Callable[[dict[str, Any]], None], env: dict[str, str] | None = None,
              ) -> dict[str, Any]:
    """Run ``fn(out)`` in a forked child running as uid/gid 65534 and return
    what it put in ``out`` (``error`` if it raised)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        out: dict[str, Any] = {}
        try:
            os.close(r)
            os.environ.update(env or {})
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn(out)
        except BaseException as e:
            out["error"] = f"{type(e).__name__}: {e}"
            out["traceback"] = traceback.format_exc()
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data)
    return result
