"""client.py: submit jobs to jobd and print their results, matched by id.

Every ARG is one job of TASK (an ARG that parses as JSON is that value,
else the string): all are submitted at once, then each result is taken by
its correlation id as it comes back::

    $ python examples/jobd/client.py square 1 2 3
    square(1) = 1
    square(2) = 4
    square(3) = 9

Exit status 0 if every job succeeded, 1 if any failed (a RemoteError: the
job raised, or it went to the dead letters) or had no result within
``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import shmring
from shmring import Requester


def parse_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Submit jobs to jobd, print their results.")
    p.add_argument("--name", default="jobd", help="jobd's service name (default jobd)")
    p.add_argument("--namespace", default=None,
                   help="shmring namespace (default $SHMRING_NAMESPACE, else default)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for all results (default 30)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("task", help="a task the workers know: square, sum, upper, sleep, fail, ...")
    p.add_argument("args", nargs="+", metavar="ARG", help="one job per ARG")
    args = p.parse_args(argv)
    values = [parse_arg(a) for a in args.args]
    out: list[dict[str, Any]] = []
    with Requester(args.name, namespace=args.namespace) as client:
        ids = [client.submit({"op": "submit", "job": {"task": args.task, "arg": v}})
               for v in values]
        deadline = time.monotonic() + args.timeout
        for rid, value in zip(ids, values, strict=True):
            row: dict[str, Any] = {"id": rid, "arg": value}
            try:
                row["value"] = client.result(rid, timeout=max(deadline - time.monotonic(), 0))
                row["ok"] = True
            except shmring.RemoteError as e:
                row.update(ok=False, error=str(e))
            except shmring.Timeout as e:
                row.update(ok=False, error=str(e), timeout=True)
            out.append(row)
            if not args.json:
                what = f"{args.task}({value!r})"
                print(f"{what} = {row['value']!r}" if row["ok"] else
                      f"{what} failed: {row['error']}", flush=True)
        stray = client.stray
    if args.json:
        print(json.dumps({"results": out, "stray": stray}))
    return 0 if all(r["ok"] for r in out) else 1


if __name__ == "__main__":
    sys.exit(main())
