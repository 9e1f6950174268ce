"""worker.py: a jobd worker. Start any number, at any time, before or after
jobd; stop them (SIGTERM, Ctrl-C) or kill them whenever you like.

A worker makes an inbox channel of its own (``<service>.worker.<pid>``,
mpsc: whichever jobd runs is its producer), says ``hello`` to jobd, then
runs one job at a time from the inbox and reports each with ``done``,
again and again until a jobd acknowledges it: a result survives a jobd
restart. While idle it says ``hello`` once a second, so a restarted jobd
learns of it at once. On SIGTERM it finishes its job, says ``bye`` and
removes its inbox.

Jobs are ``{"task": NAME, "arg": VALUE}``; the tasks are in ``TASKS``::

    $ python examples/jobd/worker.py --slow 0.1
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import shmring
from shmring import Requester


def _fail(arg: Any) -> Any:
    raise ValueError(f"asked to fail: {arg!r}")


def _crash(_arg: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)  # a poison job: kills whoever runs it
    raise AssertionError("unreachable")


def _exit(arg: Any) -> Any:
    os._exit(int(arg) if isinstance(arg, int) else 3)


def _sleep(arg: Any) -> Any:
    time.sleep(float(arg))
    return arg


TASKS: dict[str, Callable[[Any], Any]] = {
    "square": lambda x: x * x,
    "sum": sum,
    "upper": lambda s: str(s).upper(),
    "sleep": _sleep,
    "fail": _fail,
    "crash": _crash,
    "exit": _exit,
}


def my_start_time() -> int:
    with open("/proc/self/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


class Worker:
    def __init__(self, service: str, slow: float, quiet: bool,
                 namespace: str | None = None) -> None:
        self.service = service
        self.slow = slow
        self.quiet = quiet
        self.stopping = False
        self.inbox_name = f"{service}.worker.{os.getpid()}"
        self.inbox = shmring.Channel.create(self.inbox_name, capacity=1 << 20, pattern="mpsc",
                                            namespace=namespace)
        self.rx = self.inbox.consumer()
        self.me = [os.getpid(), my_start_time(), self.inbox_name]
        self.jobd = Requester(service, namespace=namespace)
        self.done = 0
        self.missing = False  # no jobd answered the last message

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"worker {os.getpid()}: {text}", flush=True)

    def tell(self, msg: dict[str, Any], *, give_up_after: float | None) -> bool:
        """Send ``msg`` to jobd until one acknowledges it (a restarted jobd
        counts), or ``give_up_after`` seconds pass (None: until stopped)."""
        deadline = None if give_up_after is None else time.monotonic() + give_up_after
        while True:
            try:
                self.jobd.call({**msg, "worker": self.me}, timeout=1.0)
                if self.missing:
                    self.say("jobd answers again")
                    self.missing = False
                return True
            except shmring.Timeout:
                if not self.missing:
                    self.say(f"no jobd answers ({msg['op']}); trying again every second")
                    self.missing = True
            if deadline is not None and time.monotonic() > deadline:
                return False
            if deadline is None and self.stopping:
                return False

    def run_job(self, msg: dict[str, Any]) -> dict[str, Any]:
        job = msg.get("job")
        if self.slow:
            time.sleep(self.slow)
        try:
            if not isinstance(job, dict) or job.get("task") not in TASKS:
                raise LookupError(f"not a job this worker knows: {job!r} "
                                  f"(tasks: {', '.join(sorted(TASKS))})")
            value = TASKS[job["task"]](job.get("arg"))
        except Exception as e:
            return {"op": "done", "key": msg["key"], "ok": False,
                    "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        return {"op": "done", "key": msg["key"], "ok": True, "value": value}

    def serve(self) -> None:
        if not self.tell({"op": "hello"}, give_up_after=None):
            return
        self.say(f"ready, inbox {self.inbox_name}")
        while not self.stopping:
            try:
                msg = self.rx.recv_obj(timeout=1.0)
            except shmring.Timeout:
                self.tell({"op": "hello"}, give_up_after=0)  # so a new jobd knows us
                continue
            report = self.run_job(msg)
            # A result is worth waiting for: until a jobd takes it, however
            # long; once stopping, for 10 s more at most.
            if not self.tell(report, give_up_after=None):
                self.tell(report, give_up_after=10.0)
            self.done += 1

    def close(self) -> None:
        self.tell({"op": "bye"}, give_up_after=2.0)
        self.jobd.close()
        self.inbox.close()
        self.inbox.unlink()
        self.say(f"stopped after {self.done} jobs")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A jobd worker: runs jobs from its inbox.")
    p.add_argument("--name", default="jobd", help="jobd's service name (default jobd)")
    p.add_argument("--namespace", default=None,
                   help="shmring namespace (default $SHMRING_NAMESPACE, else default)")
    p.add_argument("--slow", type=float, default=0.0, metavar="S",
                   help="seconds added to every job (to watch it, or to kill it mid-job)")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    args = p.parse_args(argv)
    worker = Worker(args.name, args.slow, args.quiet, args.namespace)

    def stop(_sig: int, _frame: object) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.serve()
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
