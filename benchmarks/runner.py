"""Run every selected workload on every system, repeats interleaved, and report."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import report
from .params import Params
from .peers import Peer, all_peers
from .procs import RunTimeout
from .workloads import Bench, measure

SHM = "/dev/shm"
TOKEN = "shmbench"  # every channel, service and segment this harness names contains it


def log(msg: str) -> None:
    """Progress goes to stderr; stdout gets the tables."""
    print(msg, file=sys.stderr, flush=True)


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


def _initial(bench: Bench, peer: Peer, unavailable: str | None) -> dict[str, Any]:
    if unavailable:
        return {"status": "n/a", "note": unavailable, "runs": []}
    if bench.id in peer.unsupported:
        return {"status": "n/a", "note": peer.unsupported[bench.id], "runs": []}
    return {"status": "ok", "note": peer.note(bench.id), "runs": []}


def run(benches: list[Bench], peers: list[Peer], params: Params) -> report.Results:
    """Measure; a system that times out or fails is not repeated on that workload."""
    unavailable = {p.name: p.check() for p in peers}
    results: report.Results = {}
    for bench in benches:
        results[bench.id] = {p.name: _initial(bench, p, unavailable[p.name]) for p in peers}
        for rep in range(params.repeats):
            for peer in peers:
                entry = results[bench.id][peer.name]
                if entry["status"] != "ok":
                    continue
                started = time.perf_counter()
                try:
                    metrics = measure(bench, peer, params)
                except RunTimeout as exc:
                    entry.update(status="timeout", note=str(exc))
                except Exception as exc:  # reported in the table
                    entry.update(status="error", note=f"{type(exc).__name__}: {exc}")
                else:
                    entry["runs"].append(metrics)
                shown = (
                    ", ".join(f"{k}={v:.4g}" for k, v in entry["runs"][-1].items())
                    if entry["status"] == "ok"
                    else f"{entry['status']}: {entry['note']}"
                )
                log(
                    f"[{bench.id}] {peer.name} {rep + 1}/{params.repeats} "
                    f"({time.perf_counter() - started:.1f} s): {shown}"
                )
    return results


def main(params: Params, benches: list[Bench], systems: str | None, out_dir: Path) -> int:
    """Run, print the tables, write latest.md/.json/.png; non-zero exit if /dev/shm leaked."""
    peers = all_peers()
    if systems:
        wanted = {s.strip() for s in systems.split(",")} | {"shmring"}
        peers = [p for p in peers if p.name in wanted]
    before = _shm_entries()
    try:
        results = run(benches, peers, params)
    finally:
        for peer in peers:
            peer.cleanup_all()
    leaked = sorted(e for e in _shm_entries() - before if TOKEN in e)
    shm_check = "clean" if not leaked else "LEAKED " + ", ".join(leaked)
    meta = {
        "machine": report.machine(),
        "params": dataclasses.asdict(params),
        "versions": {p.name: p.version() for p in peers if not p.in_process and p.check() is None},
        "shm_check": shm_check,
    }
    text = report.markdown(benches, results, peers, meta)
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.md").write_text(text)
    report.write_json(out_dir / "latest.json", benches, results, meta)
    if report.write_chart(out_dir / "latest.png", benches, results, peers):
        log(f"wrote {out_dir / 'latest.png'}")
    log(f"wrote {out_dir / 'latest.md'} and {out_dir / 'latest.json'}; /dev/shm: {shm_check}")
    return 1 if leaked else 0
