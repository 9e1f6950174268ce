"""jobd: a job server. Clients submit jobs and get each result back by its
correlation id; workers come and go; a job whose worker dies goes to another
worker; a job that kills every worker it touches ends in the dead letters
after ``--max-tries`` attempts instead of looping.

jobd is a broker between two kinds of processes (README.md has the whole
story):

- clients send ``{"op": "submit", "job": ...}`` with a ``Requester`` to the
  service (default ``jobd``) and get the job's result, or a RemoteError,
  as the reply to that request, whenever the job is done;
- workers (``worker.py``, any number, started and stopped at any time) make
  an inbox channel of their own, introduce themselves with ``hello``, take
  one job at a time from their inbox and report it with ``done``.

jobd keeps who runs what, by worker pid and start time (so a reused pid is
never taken for the worker that died), looks at them ten times a second,
and gives a dead worker's job to the next idle worker, up to ``--max-tries``
attempts; a job still in a dead worker's inbox was never attempted, and goes
back without counting.

Run it, and ask it how it is doing::

    $ python examples/jobd/jobd.py run --max-tries 3
    $ python examples/jobd/jobd.py status --json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import shmring
from shmring import Request, Requester, Responder

#: A job's identity: its client's reply channel and the request's id there.
#: It survives a jobd restart, so a worker can report to the next jobd.
Key = tuple[str, int]
LOOK_EVERY = 0.1  # seconds between looks at the workers' processes
FINISHED_KEPT = 10_000  # keys of finished jobs kept, to drop late duplicates


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time since boot), or None if
    ``pid`` is gone or a zombie: with the pid, a process's identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


@dataclass
class Job:
    """A job jobd holds: what the client sent, how often a worker took it."""

    key: Key
    job: Any
    attempts: int = 0
    workers: list[int] = field(default_factory=list)


@dataclass
class Worker:
    """A worker jobd knows: its process, its inbox, the job it runs."""

    pid: int
    start: int
    inbox: str
    channel: shmring.Channel
    tx: shmring.Producer
    job: Key | None = None
    done: int = 0


class Broker:
    """jobd's state and its loop: take requests, hand out jobs, watch workers."""

    def __init__(self, service: str, max_tries: int, namespace: str | None = None) -> None:
        self.service = service
        self.max_tries = max_tries
        self.namespace = namespace
        self.server = Responder(service, namespace=namespace)
        self.workers: dict[int, Worker] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.jobs: dict[Key, Job] = {}  # queued or running
        self.finished: collections.OrderedDict[Key, None] = collections.OrderedDict()
        self.dead_letters: list[dict[str, Any]] = []
        self.counts = {"submitted": 0, "done": 0, "failed": 0, "retried": 0,
                       "duplicates": 0, "forwarded": 0}
        self.started = time.time()
        self.stopping = False

    # --------------------------------------------------------------- loop --
    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (``stopping``)."""
        next_look = 0.0
        while not self.stopping:
            try:
                req = self.server.recv(timeout=LOOK_EVERY)
            except shmring.Timeout:
                req = None
            if req is not None:
                self.handle(req)
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + LOOK_EVERY
                self.look_at_workers()
            self.dispatch()

    def handle(self, req: Request) -> None:
        """One request, from a client or a worker."""
        msg = req.payload
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "submit":
            self.submit(req, msg.get("job"))
        elif op == "status":
            req.reply(self.status())
        elif op in ("hello", "done", "bye"):
            worker = self.worker_of(msg.get("worker"))
            if op == "done" and isinstance(msg.get("key"), list):
                self.finish(worker, (msg["key"][0], msg["key"][1]), msg)
            elif op == "bye" and worker is not None:
                self.forget(worker, alive=True)
            req.reply("ok")
        else:
            req.fail(f"unknown request {msg!r}: send a dict with op submit or status")

    # ------------------------------------------------------------ clients --
    def submit(self, req: Request, job: Any) -> None:
        key = (req.reply_to, req.id)
        if key in self.jobs or key in self.finished:
            return  # sent twice: answered once, when it is done
        self.counts["submitted"] += 1
        entry = Job(key, job)
        self.jobs[key] = entry
        self.queue.append(entry)

    def dispatch(self) -> None:
        """Give queued jobs to idle workers, oldest first."""
        idle = [w for w in self.workers.values() if w.job is None]
        while self.queue and idle:
            job, worker = self.queue.popleft(), idle.pop()
            job.attempts += 1
            job.workers.append(worker.pid)
            worker.job = job.key
            try:
                worker.tx.send_obj({"key": list(job.key), "attempt": job.attempts,
                                    "job": job.job}, timeout=1.0)
            except shmring.ShmringError:
                job.attempts -= 1
                job.workers.pop()
                worker.job = None
                self.queue.appendleft(job)
                self.forget(worker, alive=False)

    def finish(self, worker: Worker | None, key: Key, msg: dict[str, Any]) -> None:
        """A worker reports a job; its client gets the result once."""
        if worker is not None and worker.job == key:
            worker.job = None
            worker.done += 1
        if key in self.finished:
            self.counts["duplicates"] += 1
            return
        job = self.jobs.pop(key, None)
        if job is None:
            self.counts["forwarded"] += 1  # given out by a jobd before this one
        elif job in self.queue:
            self.queue.remove(job)
        self.finished[key] = None
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)
        client = self.server.request(key[0], key[1])
        if msg.get("ok"):
            self.counts["done"] += 1
            client.reply(msg.get("value"))
        else:
            self.counts["failed"] += 1
            client.fail(shmring.RemoteError(
                f"job {key[1]} of {key[0]} failed in worker {msg['worker'][0]}: "
                f"{msg.get('error')}", stage=self.service,
                remote_traceback=str(msg.get("traceback", ""))))

    # ------------------------------------------------------------ workers --
    def worker_of(self, who: Any) -> Worker | None:
        """The worker a message comes from, known from now on if it was not."""
        if not (isinstance(who, list) and len(who) == 3):
            return None
        pid, start, inbox = who
        known = self.workers.get(pid)
        if known is not None and known.start == start:
            return known
        if known is not None:
            self.forget(known, alive=False)  # its pid was reused
        if start_time(pid) != start:
            return None  # gone already
        try:
            ch = shmring.Channel.open(inbox, namespace=self.namespace)
        except shmring.RegionNotFound:
            return None
        worker = Worker(pid, start, inbox, ch, ch.producer())
        self.workers[pid] = worker
        print(f"jobd: worker {pid} joined ({len(self.workers)} now)", flush=True)
        return worker

    def look_at_workers(self) -> None:
        for worker in list(self.workers.values()):
            if start_time(worker.pid) != worker.start:
                self.forget(worker, alive=False)

    def forget(self, worker: Worker, *, alive: bool) -> None:
        """Drop a worker that died (or said bye); its job goes on elsewhere."""
        del self.workers[worker.pid]
        untouched: set[Key] = set()
        if not alive:
            untouched = self.drain_inbox(worker)
        worker.channel.close()
        if worker.job is not None and worker.job in self.jobs:
            job = self.jobs[worker.job]
            if alive or worker.job in untouched:
                job.attempts -= 1  # never started: not an attempt
                job.workers.pop()
                self.queue.appendleft(job)
            elif job.attempts >= self.max_tries:
                self.bury(job)
            else:
                self.counts["retried"] += 1
                self.queue.appendleft(job)
        how = "left" if alive else "died"
        print(f"jobd: worker {worker.pid} {how} ({len(self.workers)} left)", flush=True)

    def drain_inbox(self, worker: Worker) -> set[Key]:
        """Keys of the jobs still in a dead worker's inbox (it never took them)."""
        found: set[Key] = set()
        try:
            rx = worker.channel.consumer()  # the dead worker's role is freed
        except shmring.ShmringError:
            return found
        while True:
            try:
                msg = rx.recv_obj_nowait()
            except (shmring.WouldBlock, shmring.EndOfStream, shmring.DecodeError):
                break
            if isinstance(msg, dict) and isinstance(msg.get("key"), list):
                found.add((msg["key"][0], msg["key"][1]))
        worker.channel.unlink()
        return found

    def bury(self, job: Job) -> None:
        """A job that killed every worker it was given to: a dead letter."""
        del self.jobs[job.key]
        self.finished[job.key] = None
        letter = {"client": job.key[0], "id": job.key[1], "job": job.job,
                  "attempts": job.attempts, "workers": job.workers}
        self.dead_letters.append(letter)
        print(f"jobd: dead letter: job {job.key[1]} of {job.key[0]} killed its worker "
              f"{job.attempts} times", flush=True)
        self.server.request(*job.key).fail(shmring.RemoteError(
            f"job {job.key[1]} killed every worker it was given to (pids "
            f"{', '.join(map(str, job.workers))}): moved to the dead letters after "
            f"{job.attempts} tries", stage=self.service, item=job.job))

    # -------------------------------------------------------------- state --
    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "service": self.service,
            "max_tries": self.max_tries,
            "uptime": round(time.time() - self.started, 3),
            "workers": [{"pid": w.pid, "busy": w.job is not None, "done": w.done}
                        for w in self.workers.values()],
            "queued": len(self.queue),
            "in_flight": sum(1 for w in self.workers.values() if w.job is not None),
            **self.counts,
            "dead_letters": self.dead_letters,
            "requests": self.server.stats,
        }

    def close(self) -> None:
        """Fail the jobs still queued (their clients hear it now, not at a
        timeout), let running ones finish (a next jobd forwards them)."""
        for job in self.queue:
            self.server.request(*job.key).fail(
                f"jobd stopped before job {job.key[1]} was given to a worker")
        for worker in self.workers.values():
            worker.channel.close()
        self.server.close()


# ----------------------------------------------------------------- cli --
def cmd_run(args: argparse.Namespace) -> int:
    broker = Broker(args.name, args.max_tries, args.namespace)

    def stop(_sig: int, _frame: object) -> None:
        broker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"jobd: serving {args.name!r} (pid {os.getpid()}, max tries {args.max_tries})",
          flush=True)
    try:
        broker.run()
    finally:
        broker.close()
    print("jobd: stopped", flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with Requester(args.name, namespace=args.namespace) as client:
        try:
            st = client.call({"op": "status"}, timeout=args.timeout)
        except shmring.Timeout as e:
            print(f"jobd is not answering: {e}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    busy = sum(w["busy"] for w in st["workers"])
    print(f"jobd pid {st['pid']} serving {st['service']!r}, up {st['uptime']:.0f} s, "
          f"max tries {st['max_tries']}")
    print(f"workers: {len(st['workers'])} ({busy} busy)  queued: {st['queued']}  "
          f"in flight: {st['in_flight']}  done: {st['done']}  failed: {st['failed']}  "
          f"retried: {st['retried']}  dead letters: {len(st['dead_letters'])}")
    for d in st["dead_letters"]:
        print(f"  dead letter: job {d['id']} of {d['client']}: {d['job']!r}, "
              f"{d['attempts']} tries, workers {d['workers']}")
    return 0


def parser() -> argparse.ArgumentParser:
    """jobd's command line: ``run [--max-tries N]`` and ``status [--json]``."""
    p = argparse.ArgumentParser(prog="jobd", description="A job server on shmring: clients "
                                "submit jobs, workers come and go, poison jobs end in the "
                                "dead letters.")
    p.add_argument("--name", default="jobd", help="service name (default jobd)")
    p.add_argument("--namespace", default=None,
                   help="shmring namespace (default $SHMRING_NAMESPACE, else default)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve jobs until SIGTERM or Ctrl-C")
    run.add_argument("--max-tries", type=int, default=3, metavar="N",
                     help="attempts before a job that kills its workers is a dead letter")
    st = sub.add_parser("status", help="ask the running jobd how it is doing")
    st.add_argument("--json", action="store_true", help="machine-readable")
    st.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for jobd")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "run" and args.max_tries < 1:
        p.error("--max-tries must be at least 1")
    return cmd_run(args) if args.command == "run" else cmd_status(args)


if __name__ == "__main__":
    sys.exit(main())
