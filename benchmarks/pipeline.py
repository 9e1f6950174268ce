"""``python -m benchmarks.pipeline [--quick] [--repeats N] [--items N] [--out DIR]``: shmring
pipelines beside the process pools a Python user would otherwise pick.

1. Small items: ``range(N)`` through ``x + 1`` then ``x * 2``, as two map stages
   (1 and 2 workers each), or the composed function on 2 processes
   (``multiprocessing.Pool.imap``, ``ProcessPoolExecutor.map``, mpire
   ``WorkerPool.map``) at chunk sizes 1, 16, 256, 4096; every run checks its sum.
2. 8 MB arrays (1,000,000 float64) through three ``zero_copy`` stages with 64 MiB
   edges, each returning the read-only view it got (sent on by reference: the
   array stays in the run's pool), beside one-process ``numpy.copyto`` (hot and
   cold source).
3. Recovery: the busy worker of a 2-worker stage is SIGKILLed; the latency is the
   time from the kill to another worker starting the same item.

Tables go to stdout, progress to stderr, every repeat's numbers to
``DIR/pipeline.json`` (default ``benchmarks/results``).
"""

# ruff: noqa: RUF001 - the tables use the multiplication sign and the en dash

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import importlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import platform
import queue
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import shmring

TOKEN = "shmbench-pipe"  # every pipeline here is named so; /dev/shm is checked for it
CHUNKS = (1, 16, 256, 4096)
POOL = 2  # processes of each pool
ARRAY_LEN = 1_000_000
ARRAY_BYTES = ARRAY_LEN * 8
EDGE_BYTES = 64 << 20
SLEEP_S = 0.2  # the recovery stage's time per item
KILL_AFTER_S = 0.05  # how long into its item the busy worker is killed
Entry = dict[str, Any]  # label, note, status, runs
#: 8 MB copies per array: the feeder's into the run's array pool; the stages
#: pass the array on by reference, and the parent's loop (or a sink) reads it
#: in place (src/shmring/_pipeline/arrays.py).
COPIES = {"map3": 1, "sink": 1}


@dataclass(frozen=True)
class Params:
    """Sizes and repeats of a run."""

    quick: bool
    repeats: int
    items: int  # small items per run
    arrays: int  # 8 MB arrays per run
    trials: int  # kills per recovery run
    deadline: float  # watchdog per measurement, seconds

    @classmethod
    def make(cls, quick: bool, repeats: int | None, items: int | None = None) -> Params:
        """Full defaults (~3 min on 2 CPUs), or --quick ones (under a minute);
        ``items`` overrides the small items per run."""
        if quick:
            return cls(True, repeats or 1, items=items or 20_000, arrays=30, trials=5,
                       deadline=60.0)
        return cls(False, repeats or 3, items=items or 200_000, arrays=200, trials=20,
                   deadline=300.0)


def log(msg: str) -> None:
    """Progress goes to stderr; stdout gets the tables."""
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------- the stages' functions --
def inc(x: int) -> int:
    """Stage 1 of the small-item pipeline."""
    return x + 1


def dbl(x: int) -> int:
    """Stage 2 of the small-item pipeline."""
    return x * 2


def inc_dbl(x: int) -> int:
    """Both stages in one call: what the pools run."""
    return dbl(inc(x))


def same(a: Any) -> Any:
    """An array stage: returns the read-only view it got (sent on by reference)."""
    return a


def check_ends(a: Any) -> int:
    """The item number written at both ends of an array (ValueError if damaged)."""
    if a[0] != a[-1] or a[ARRAY_LEN // 2] != 1.0 or a.shape != (ARRAY_LEN,):
        raise ValueError(f"array {a[0]} arrived damaged")
    return int(a[0])


def sink_ends(arrivals: Any, a: Any) -> int:
    """The array sink: checks the array in place, notes when it arrived."""
    arrivals[i := check_ends(a)] = time.monotonic()
    return i


def slow_record(directory: str, x: int) -> int:
    """The recovery stage: notes (item, start time) in its pid's file, then sleeps."""
    t = time.monotonic()
    with open(os.path.join(directory, str(os.getpid())), "a") as f:
        f.write(f"{x} {t!r}\n")
    time.sleep(SLEEP_S)
    return x


def _cpu() -> float:
    """CPU seconds of this process (every thread) and of its children reaped so far."""
    s, c = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _mpire() -> Any:
    return importlib.import_module("mpire") if importlib.util.find_spec("mpire") else None


# ------------------------------------------------------ 1. small items --------
def small_shmring(n: int, workers: int, chunksize: int = 1) -> dict[str, float]:
    """Two map stages of ``workers`` each, items sent ``chunksize`` to a
    record; items/s from entering the run to its end."""
    p = shmring.Pipeline(TOKEN, context="fork")
    p.source(range(n), chunksize=chunksize).map(inc, workers=workers).map(dbl, workers=workers)
    c0, t0 = _cpu(), time.perf_counter()
    with p.run() as run:
        t1 = time.perf_counter()
        total = sum(run)
        t2 = time.perf_counter()
    return _small_result(n, total, t0, t1, t2, _cpu() - c0)


def _small_result(n: int, total: int, t0: float, t1: float, t2: float,
                  cpu: float) -> dict[str, float]:
    if total != n * (n + 1):  # sum of (x + 1) * 2 for x < n
        raise AssertionError(f"sum of outputs {total}, expected {n * (n + 1)}")
    return {"items_s": n / (t2 - t0), "setup_s": t1 - t0, "cpu_us": cpu / n * 1e6}


def small_peer(n: int, kind: str, chunksize: int) -> dict[str, float]:
    """The composed function on 2 processes: ``pool`` (``multiprocessing.Pool.imap``),
    ``executor`` (``ProcessPoolExecutor.map``) or ``mpire`` (``WorkerPool.map``)."""
    ctx = multiprocessing.get_context("fork")
    c0, t0 = _cpu(), time.perf_counter()
    pool: Any = (ctx.Pool(POOL) if kind == "pool" else
                 concurrent.futures.ProcessPoolExecutor(POOL, mp_context=ctx)
                 if kind == "executor" else _mpire().WorkerPool(n_jobs=POOL, start_method="fork"))
    with pool:
        t1 = time.perf_counter()  # only Pool has started its processes by now
        if kind == "pool":
            total = sum(pool.imap(inc_dbl, range(n), chunksize))
        else:
            kw = {"chunk_size" if kind == "mpire" else "chunksize": chunksize}
            total = sum(pool.map(inc_dbl, range(n), **kw))
        t2 = time.perf_counter()
    return _small_result(n, total, t0, t1, t2, _cpu() - c0)  # the pool's processes reaped


def small_configs() -> list[tuple[str, str, str, Callable[[int], dict[str, float]]]]:
    """(id, label, note, measure) of every small-item configuration."""
    out: list[tuple[str, str, str, Callable[[int], dict[str, float]]]] = [
        (f"shmring_w{w}", f"shmring Pipeline, workers={w}",
         f"2 map stages x {w} worker(s), unordered; {2 * w} workers",
         functools.partial(small_shmring, workers=w)) for w in (1, 2)]
    out += [(f"shmring_k{c}", f"shmring Pipeline, chunksize={c}",
             "2 map stages x 1 worker, unordered; source(chunksize=...)",
             functools.partial(small_shmring, workers=1, chunksize=c)) for c in (256, 4096)]
    peers = [("pool", "multiprocessing.Pool.imap"), ("executor", "ProcessPoolExecutor.map")]
    if _mpire() is not None:
        peers.append(("mpire", "mpire WorkerPool.map"))
    for key, label in peers:
        out += [(f"{key}_c{c}", f"{label}, chunksize={c}", f"{POOL} processes, composed fn",
                 functools.partial(small_peer, kind=key, chunksize=c)) for c in CHUNKS]
    return out


# ------------------------------------------------------ 2. 8 MB arrays --------
def _array_source(n: int, a: Any) -> Iterator[Any]:
    # One array, numbered at both ends before each send (the feeder copies it
    # into the first edge before it asks for the next one).
    for i in range(n):
        a[0] = a[-1] = i
        yield a


def arrays_shmring(n: int, sink: bool) -> dict[str, float]:
    """Three zero_copy stages: ``same`` x 3 into the parent, or ``same`` x 2 and
    ``sink_ends``. GB/s per hop (every hop moves every array), steady state: (n - 1)
    arrays from the first out of the last stage to the last; end to end: n, whole run."""
    np: Any = importlib.import_module("numpy")
    src = np.ones(ARRAY_LEN, dtype=np.float64)
    arrivals: Any = multiprocessing.get_context("fork").RawArray("d", n)  # inherited by fork
    p = shmring.Pipeline(TOKEN, context="fork")
    s = p.source(_array_source(n, src))
    opts: dict[str, Any] = {"zero_copy": True, "max_bytes": EDGE_BYTES}
    s = s.map(same, name="same1", **opts).map(same, name="same2", **opts)
    if sink:
        s.sink(functools.partial(sink_ends, arrivals), name="check", **opts)
    else:
        s = s.map(same, name="same3", **opts)
    c0, t0 = _cpu(), time.perf_counter()
    with p.run() as run:
        t1 = time.perf_counter()
        if sink:
            run.wait()
            got = run.stats["check"]["in"]
        else:
            got = len([sink_ends(arrivals, a) for a in run])
        t2 = time.perf_counter()
    times = list(arrivals)
    if got != n or min(times) <= 0.0:
        raise AssertionError(f"{got} arrays out, {sum(t > 0 for t in times)} distinct, of {n}")
    p50 = statistics.median(run.stats[f"same{k}"]["p50_s"] for k in (1, 2))
    return {"hop_gb_s": (n - 1) * ARRAY_BYTES / (max(times) - min(times)) / 1e9,
            "e2e_gb_s": n * ARRAY_BYTES / (t2 - t0) / 1e9, "setup_s": t1 - t0,
            "stage_p50_ms": p50 * 1e3, "cpu_ms": (_cpu() - c0) / n * 1e3}


def memcpy(n: int, cold: bool) -> dict[str, float]:
    """``numpy.copyto`` of the same 8 MB array (``cold``: of successive slots of a
    64 MiB buffer, as a hop reads) into successive slots of a 64 MiB buffer."""
    np: Any = importlib.import_module("numpy")
    k = max(1, EDGE_BYTES // ARRAY_BYTES)
    src, dst = np.ones((k if cold else 1, ARRAY_LEN)), np.ones((k, ARRAY_LEN))
    count, t0 = max(n, 100), time.perf_counter()
    for i in range(count):
        np.copyto(dst[i % k], src[(i + 1) % len(src)])
    return {"gb_s": count * ARRAY_BYTES / (time.perf_counter() - t0) / 1e9}


# ------------------------------------------------------- 3. recovery ----------
def _starts(directory: str, item: int, times: int) -> list[tuple[float, int]] | None:
    """(start time, pid) of each attempt at ``item``, in order, once there are ``times``."""
    out: list[tuple[float, int]] = []
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as f:
            lines = [ln.split() for ln in f if ln.endswith("\n")]  # not one half written
            out += [(float(t), int(name)) for x, t in lines if int(x) == item]
    return sorted(out) if len(out) >= times else None


def _poll(what: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.001)
    raise TimeoutError(f"waited {timeout} s for the recovery stage")


def recovery(trials: int) -> dict[str, Any]:
    """One run of ``trials`` items fed one at a time to a stage of 2 workers; the
    worker on each item is killed ``KILL_AFTER_S`` into it."""
    go: queue.Queue[bool] = queue.Queue()
    # One item per go, and no end of stream before the last item is done: a closed
    # input lets idle workers leave, and a killed one's item waits for a new worker.
    source = itertools.takewhile(lambda _: go.get(timeout=60), itertools.count())

    lat: list[float] = []
    survivor = 0
    with tempfile.TemporaryDirectory(prefix=TOKEN) as d:
        p = shmring.Pipeline(TOKEN, context="fork")
        p.source(source).map(functools.partial(slow_record, d), workers=2, name="slow")
        with p.run() as run:
            it = iter(run)
            try:
                for i in range(trials):
                    _poll(lambda: len(run.pids("slow")) == 2, 10)
                    go.put(True)
                    [(_, pid)] = _poll(functools.partial(_starts, d, i, 1), 10)
                    others = set(run.pids("slow")) - {pid}
                    time.sleep(KILL_AFTER_S)
                    t_kill = time.monotonic()
                    os.kill(pid, signal.SIGKILL)
                    t_again, taker = _poll(functools.partial(_starts, d, i, 2), 10)[1]
                    lat.append(t_again - t_kill)
                    survivor += taker in others
                    if next(it) != i:
                        raise AssertionError(f"item {i} came out wrong")
            finally:
                go.put(False)
            rest = list(it)
        redelivered = run.stats["slow"]["redelivered"]
    if rest or redelivered != trials:
        raise AssertionError(f"outputs {rest} left, {redelivered} redeliveries of {trials} kills")
    return {"median_ms": statistics.median(lat) * 1e3, "p99_ms": _quantile(lat, 0.99) * 1e3,
            "max_ms": max(lat) * 1e3, "by_survivor": survivor,
            "latencies_ms": [x * 1e3 for x in lat]}


def _quantile(vals: list[float], q: float) -> float:  # nearest rank
    return sorted(vals)[max(0, math.ceil(q * len(vals)) - 1)]


# ------------------------------------------------------------- measuring ------
def _entry(label: str, note: str) -> Entry:
    return {"label": label, "note": note, "status": "ok", "runs": []}


def _in_child(fn: Callable[[], dict[str, Any]], deadline: float) -> dict[str, Any]:
    """``fn()`` in a child forked for it, with a watchdog: every measurement starts
    from this small process (a fork-context worker inherits its parent's memory, and
    a big one is slower to fork and to kill), and what it leaves goes with the child."""
    ctx = multiprocessing.get_context("fork")
    rx, tx = ctx.Pipe(duplex=False)

    def child() -> None:
        def fire(signum: int, frame: FrameType | None) -> None:
            raise TimeoutError(f"not done within {deadline:.0f} s")  # the pools clean up

        signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, deadline)
        try:
            tx.send(("ok", fn()))
        except BaseException as exc:
            tx.send(("error", f"{type(exc).__name__}: {exc}"))

    proc = ctx.Process(target=child)  # not a daemon: it starts processes of its own
    proc.start()
    try:
        if not rx.poll(deadline + 30):
            raise TimeoutError(f"no result within {deadline + 30:.0f} s")
        status, got = rx.recv()
    finally:
        proc.join(5)
        proc.kill()  # nothing once it has exited
        proc.join()
    if status != "ok" or not isinstance(got, dict):
        raise RuntimeError(got)
    return got


def _measure(entry: Entry, tag: str, rep: int, params: Params,
             fn: Callable[[], dict[str, Any]]) -> None:
    """One repeat of one configuration; a failure ends the configuration's repeats."""
    if entry["status"] != "ok":
        return
    started = time.perf_counter()
    try:
        got = _in_child(fn, params.deadline)
    except Exception as exc:  # reported in the table
        entry.update(status="error", note=f"{type(exc).__name__}: {exc}")
        log(f"[{tag}] {rep + 1}/{params.repeats}: error: {entry['note']}")
        return
    entry["runs"].append(got)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in got.items() if isinstance(v, float | int))
    log(f"[{tag}] {rep + 1}/{params.repeats} ({time.perf_counter() - started:.1f} s): {shown}")


def measure_all(params: Params) -> tuple[dict[str, dict[str, Entry]], dict[str, float]]:
    """Every measurement, repeats interleaved across configurations; also how
    long the first contact with the supervisor and a first run took to start."""
    small = {cid: _entry(label, note) for cid, label, note, _ in small_configs()}
    arrays = {"map3": _entry("shmring, 3 maps -> parent", "same x 3; parent reads pool views"),
              "sink": _entry("shmring, 2 maps -> sink", "same x 2; a sink checks arrays in place"),
              "memcpy": _entry("memcpy (numpy.copyto, 1 process)", "the same array"),
              "cold": _entry("memcpy, cold source", "from 8 slots of 64 MiB")}
    rec = {"kill": _entry("shmring, workers=2", f"{SLEEP_S} s per item; SIGKILL "
                          f"{KILL_AFTER_S} s into it; {params.trials} kills per run")}
    # The supervisor exits after a few idle seconds and a run that finds it
    # gone starts it and waits: a region it tracks keeps it up meanwhile.
    t0 = time.perf_counter()
    keep = shmring.Channel.create(f"{TOKEN}-keepalive", 4096, "spsc")
    warm, first = {"supervisor_s": time.perf_counter() - t0}, _entry("warm-up", "")
    try:
        _measure(first, "warm-up", 0, params, functools.partial(small_shmring, 1000, 1))
        warm.update({f"first_run_{k}": v for r in first["runs"] for k, v in r.items()})
        for rep in range(params.repeats):
            for cid, _, _, fn in small_configs():
                _measure(small[cid], cid, rep, params, functools.partial(fn, params.items))
        for rep in range(params.repeats):
            for key in ("map3", "sink"):
                _measure(arrays[key], f"arrays {key}", rep, params,
                         functools.partial(arrays_shmring, params.arrays, key == "sink"))
            for key in ("memcpy", "cold"):
                _measure(arrays[key], key, rep, params,
                         functools.partial(memcpy, params.arrays, key == "cold"))
        for rep in range(params.repeats):
            _measure(rec["kill"], "recovery", rep, params,
                     functools.partial(recovery, params.trials))
    finally:
        keep.close()
    return {"small": small, "arrays": arrays, "recovery": rec}, warm


# --------------------------------------------------------------- reporting ----
def med(entry: Entry, key: str) -> float | None:
    """The median of ``key`` over an entry's repeats (None if it failed)."""
    if entry["status"] != "ok" or not entry["runs"]:
        return None
    return float(statistics.median(r[key] for r in entry["runs"]))


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _f2(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _num(v: float) -> str:
    for scale, suffix in ((1e6, " M"), (1e3, " k")):
        if v >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _cells(entry: Entry, key: str, f: Callable[[float], str] = _num) -> list[str]:
    if entry["status"] != "ok":
        return [entry["status"], ""]
    vals = [r[key] for r in entry["runs"]]
    return [f(statistics.median(vals)), f"{f(min(vals))}–{f(max(vals))}"]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|",
            *("| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows)]


def best(entries: dict[str, Entry], prefix: str) -> str | None:
    """The id of the configuration starting with ``prefix`` of highest median items/s."""
    scored = [(m, k) for k, e in entries.items() if k.startswith(prefix)
              and (m := med(e, "items_s")) is not None]
    return max(scored)[1] if scored else None


def summary(res: dict[str, dict[str, Entry]], nproc: int) -> dict[str, Any]:
    """The ratios the goals are about, from medians of this run."""
    small, arrays = res["small"], res["arrays"]
    ours, pool_best = best(small, "shmring"), best(small, "pool_")
    ours_v = med(small[ours], "items_s") if ours else None
    mem, cold = med(arrays["memcpy"], "gb_s"), med(arrays["cold"], "gb_s")
    single = best(small, "shmring_w")  # one item per record, as Pool at chunksize 1
    single_v = med(small[single], "items_s") if single else None
    out = {"shmring_best": ours, "pool_best": pool_best, "shmring_single_best": single,
           "single_over_pool_c1": _div(single_v, med(small["pool_c1"], "items_s")),
           "shmring_over_pool_c1": _div(ours_v, med(small["pool_c1"], "items_s")),
           "shmring_over_pool_best": _div(ours_v, med(small[pool_best], "items_s")
                                          if pool_best else None)}
    for key, n in COPIES.items():
        bound = None if cold is None else cold * min(nproc, n) / n
        out[f"{key}_copy_bound_gb_s"] = bound
        out[f"{key}_hop_over_memcpy"] = _div(med(arrays[key], "hop_gb_s"), mem)
        out[f"{key}_hop_over_cold"] = _div(med(arrays[key], "hop_gb_s"), cold)
        out[f"{key}_hop_over_bound"] = _div(med(arrays[key], "hop_gb_s"), bound)
    return out


def render(res: dict[str, dict[str, Entry]], meta: dict[str, Any]) -> str:
    """The Markdown report."""
    p, m, s, w = meta["params"], meta["machine"], meta["summary"], meta["warm"]
    small, arrays, rec = res["small"], res["arrays"], res["recovery"]
    ours, pb = s["shmring_best"], s["pool_best"]
    ours_v = med(small[ours], "items_s") if ours else None
    out = ["# shmring pipeline benchmarks", "",
           f"Machine: {m['cpu']}, {m['nproc']} CPUs, {m['uname']}, {m['python']}, {m['date']}; "
           "load average (1 min) before and after the run: "
           + " and ".join(f"{x:.2f}" for x in meta["load_1min"]) + ".",
           "", f"Mode: {'quick' if p['quick'] else 'full'}; {p['repeats']} repeat(s). Versions: "
           + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", "",
           f"### 1. Small items: x + 1 then x * 2, {p['items']} ints", "",
           "items/s from creating the run or pool to its last output. Setup: entering the run "
           "or creating the pool (only Pool forks then; the others in map). CPU: user + "
           "system time of all processes per item. `shmring ×`: shmring's best over this.", ""]
    rows = [[e["label"], *_cells(e, "items_s"),
             *_cells(e, "setup_s", lambda v: f"{v * 1e3:.1f}"), *_cells(e, "cpu_us", _f2),
             _f2(_div(ours_v, med(e, "items_s"))), e["note"]] for e in small.values()]
    out += _table(["system", "items/s median", "min–max", "setup ms", "min–max", "CPU µs/item",
                   "min–max", "shmring ×", "notes"], rows)
    out += ["", f"shmring best: {small[ours]['label'] if ours else 'n/a'}. "
            f"One item per record: shmring / Pool(chunksize 1) = "
            f"{_f2(s['single_over_pool_c1'])}; best of shmring / Pool(chunksize 1) = "
            f"{_f2(s['shmring_over_pool_c1'])} (goal ≥ 10); "
            f"shmring / Pool(best, {small[pb]['label'].split(', ')[-1] if pb else 'n/a'}) = "
            f"{_f2(s['shmring_over_pool_best'])} (goal ≥ 2).", "",
            f"### 2. 8 MB float64 arrays through three zero_copy stages, {p['arrays']} arrays", "",
            "GB/s per hop (each hop moves every array): steady state, from the first array "
            "out to the last; end to end: the whole run, making the 64 MiB edges included. "
            "Stage p50: run.stats' time per array of stages 1-2 (waits for room included). "
            "CPU: all processes' time, whole run, per array. Copy bound: the per-hop rate "
            "if copying were all the work, cold memcpy x min(CPUs, copies) / copies.", ""]
    rows = [[arrays[k]["label"], *_cells(arrays[k], "hop_gb_s", _f2),
             *_cells(arrays[k], "e2e_gb_s", _f2), *_cells(arrays[k], "stage_p50_ms", _f2),
             *_cells(arrays[k], "cpu_ms", _f2),
             _f2(s[f"{k}_hop_over_memcpy"]), _f2(s[f"{k}_hop_over_cold"]), str(n),
             _f2(s[f"{k}_copy_bound_gb_s"]), _f2(s[f"{k}_hop_over_bound"]), arrays[k]["note"]]
            for k, n in COPIES.items()]
    rows += [[arrays[k]["label"], *_cells(arrays[k], "gb_s", _f2), *[""] * 11, arrays[k]["note"]]
             for k in ("memcpy", "cold")]
    out += _table(["system", "GB/s per hop", "min–max", "end to end GB/s", "min–max",
                   "stage p50 ms", "min–max", "CPU ms/array", "min–max", "÷ memcpy",
                   "÷ cold memcpy", "copies", "copy bound GB/s", "÷ bound", "notes"], rows)
    e = rec["kill"]
    pooled = [x for r in e["runs"] for x in r["latencies_ms"]]
    out += ["", f"per hop ÷ memcpy: 3 maps {_f2(s['map3_hop_over_memcpy'])}, 2 maps + sink "
            f"{_f2(s['sink_hop_over_memcpy'])} (goal ≥ 0.70); ÷ memcpy from a cold source: "
            f"{_f2(s['map3_hop_over_cold'])} and {_f2(s['sink_hop_over_cold'])}.", "",
            "### 3. Recovery: SIGKILL of the busy worker to another worker starting its item",
            "", "ms; per run: median, p99 (nearest rank: the max, with 100 kills or fewer) and "
            "max. `survivor`: kills whose item the other, idle worker took (not a new one).", ""]
    rows = [[e["label"], *_cells(e, "median_ms", _f2), *_cells(e, "p99_ms", _f2),
             *_cells(e, "max_ms", _f2),
             f"{sum(r['by_survivor'] for r in e['runs'])}/{len(pooled)}", e["note"]]]
    out += _table(["system", "median ms", "min–max", "p99 ms", "min–max", "max ms", "min–max",
                   "survivor", "notes"], rows)
    if pooled:
        out += ["", f"All {len(pooled)} kills: median {statistics.median(pooled):.2f} ms, "
                f"p99 {_quantile(pooled, 0.99):.2f} ms, max {max(pooled):.2f} ms, "
                f"min {min(pooled):.2f} ms."]
    out += ["", f"Before measuring: first contact with the supervisor {w['supervisor_s'] * 1e3:.0f}"
            f" ms; a first pipeline of 1000 items took {w.get('first_run_setup_s', 0) * 1e3:.0f}"
            " ms to start. A region stays open meanwhile, so that the supervisor does not "
            "exit between runs.", "", f"/dev/shm after the run: {meta['shm_check']}", ""]
    return "\n".join(out)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    with open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                     "?")
    u = platform.uname()
    return {"cpu": model, "nproc": str(len(os.sched_getaffinity(0))),
            "uname": f"{u.system} {u.release} {u.machine}",
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def versions() -> dict[str, str]:
    """Versions of the measured libraries that are installed."""
    return {n: importlib.metadata.version(n) for n in ("shmring", "numpy", "mpire")
            if importlib.util.find_spec(n)}


def _shm(before: set[str], wait: float = 0.0) -> set[str]:
    """/dev/shm entries with ``TOKEN`` not in ``before`` (waits up to ``wait`` s for none)."""
    deadline = time.monotonic() + wait
    while True:
        left = {e for e in os.listdir("/dev/shm") if TOKEN in e} - before
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=(
        "Measure shmring pipelines beside multiprocessing.Pool, ProcessPoolExecutor and "
        "mpire: small items, 8 MB arrays, recovery from a killed worker."))
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repeat (under a minute)")
    ap.add_argument("--repeats", type=int, help="repeats per measurement (default 3, --quick 1)")
    ap.add_argument("--items", type=int,
                    help="small items per run (default 200,000, --quick 20,000)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                    help="where pipeline.json goes")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the tables, write pipeline.json; exit 1 if /dev/shm leaked."""
    args = parse(argv)
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    if args.items is not None and args.items < 1:
        raise SystemExit("--items must be at least 1")
    params = Params.make(args.quick, args.repeats, args.items)
    if _mpire() is None:
        log("mpire is not installed: its rows are left out (pip install mpire)")
    before, load = _shm(set()), os.getloadavg()[0]
    res, warm = measure_all(params)
    leaked = sorted(_shm(before, wait=5.0))
    meta: dict[str, Any] = {
        "machine": machine(), "params": asdict(params), "versions": versions(),
        "shm_check": "clean" if not leaked else "LEAKED " + ", ".join(leaked), "warm": warm,
        "load_1min": [load, os.getloadavg()[0]],
    }
    meta["summary"] = summary(res, int(meta["machine"]["nproc"]))
    print(render(res, meta))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "pipeline.json"
    path.write_text(json.dumps({**meta, "results": res}, indent=1, ensure_ascii=False) + "\n")
    log(f"wrote {path}; /dev/shm: {meta['shm_check']}")
    return 1 if leaked else 0


if __name__ == "__main__":
    raise SystemExit(main())
