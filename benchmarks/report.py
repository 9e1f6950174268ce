"""Markdown tables, the machine header, the JSON dump and the PNG chart."""

# ruff: noqa: RUF001, RUF002 - the tables use the multiplication sign and the en dash

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from .peers.base import Peer
from .workloads import Bench, Metric

Results = dict[str, dict[str, dict[str, Any]]]  # bench id -> peer name -> entry


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            models = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        model = models[0] if models else ""
    except OSError:
        pass
    u = platform.uname()
    return {
        "processor": platform.processor() or u.machine,
        "uname": f"{u.system} {u.release} {u.machine}",
        "cpu": model or "?",
        "nproc": str(len(os.sched_getaffinity(0))),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def header_line(info: dict[str, str]) -> str:
    """The one-line machine description at the top of the report."""
    return (
        f"Machine: {info['cpu']} ({info['processor']}), {info['nproc']} CPUs, {info['uname']}, "
        f"{info['python']}, {info['date']}"
    )


def fmt(value: float, unit: str) -> str:
    """A number in its unit's usual precision."""
    if unit == "msgs/s":
        for scale, suffix in ((1e6, " M"), (1e3, " k")):
            if value >= scale:
                return f"{value / scale:.3g}{suffix}"
        return f"{value:.3g}"
    if unit in ("µs", "arrays/s"):
        return f"{value:.3g}" if value < 1000 else f"{value:.0f}"
    if unit == "%":
        return f"{value:.3f}"
    return f"{value:.2f}"


def _median(entry: dict[str, Any], key: str) -> float | None:
    runs = entry.get("runs") or []
    return statistics.median(r[key] for r in runs) if entry["status"] == "ok" and runs else None


def _ratio(ours: float | None, theirs: float | None, metric: Metric) -> str:
    if ours is None or theirs is None:
        return "—"
    num, den = (ours, theirs) if metric.higher_is_better else (theirs, ours)
    return f"{num / den:.2f}" if den > 0 else "—"


def table(bench: Bench, results: Results, peers: list[Peer]) -> str:
    """One Markdown table: a row per system, median and min–max per metric, ratios, notes."""
    ratio_metrics = [m for m in bench.metrics if m.ratio]
    head = ["system"]
    for m in bench.metrics:
        head += [f"{m.label} median", "min–max"]
    head += [
        f"shmring × ({m.label})" if len(ratio_metrics) > 1 else "shmring ×" for m in ratio_metrics
    ]
    head.append("notes")
    lines = [
        f"### {bench.group}. {bench.title}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|",
    ]
    ours = results[bench.id].get("shmring", {"status": "n/a"})
    for peer in peers:
        entry = results[bench.id][peer.name]
        row = [peer.label]
        if entry["status"] != "ok":
            row += [entry["status"], ""] * len(bench.metrics) + ["—"] * len(ratio_metrics)
        else:
            for m in bench.metrics:
                vals = [r[m.key] for r in entry["runs"]]
                row += [
                    fmt(statistics.median(vals), m.unit),
                    f"{fmt(min(vals), m.unit)}–{fmt(max(vals), m.unit)}",
                ]
            row += [_ratio(_median(ours, m.key), _median(entry, m.key), m) for m in ratio_metrics]
        row.append(entry.get("note", "").replace("|", "/"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def markdown(
    benches: list[Bench], results: Results, peers: list[Peer], meta: dict[str, Any]
) -> str:
    """The whole report."""
    p = meta["params"]
    parts = [
        "# shmring benchmarks",
        "",
        header_line(meta["machine"]),
        "",
        f"Mode: {'quick' if p['quick'] else 'full'}; {p['repeats']} repeat(s); producers send for "
        f"{p['duration']} s per measurement; idle test {p['idle_seconds']} s. "
        "`shmring ×`: shmring's median over this system's (for latency and CPU: this "
        "system's over shmring's), so above 1 means shmring is better.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v),
        "",
    ]
    parts += [table(b, results, peers) for b in benches]
    parts.append(f"/dev/shm after the run: {meta['shm_check']}\n")
    return "\n".join(parts)


def write_json(path: Path, benches: list[Bench], results: Results, meta: dict[str, Any]) -> None:
    """Raw numbers: every repeat of every system on every workload."""
    doc = {**meta, "benches": {b.id: {"title": b.title, "results": results[b.id]} for b in benches}}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def write_chart(path: Path, benches: list[Bench], results: Results, peers: list[Peer]) -> bool:
    """One horizontal bar chart per workload (first metric, min–max whiskers, log scale
    when the values span more than 50×)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
        return False
    cols = 3
    rows = (len(benches) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 2.8 * rows), squeeze=False)
    for ax, bench in zip(axes.flat, benches, strict=False):
        metric = bench.metrics[0]
        names, meds, lo, hi = [], [], [], []
        for peer in peers:
            entry = results[bench.id][peer.name]
            if entry["status"] == "ok":
                vals = [r[metric.key] for r in entry["runs"]]
                med = statistics.median(vals)
                names.append(peer.label)
                meds.append(med)
                lo.append(med - min(vals))
                hi.append(max(vals) - med)
        colors = ["tab:red" if n == "shmring" else "tab:gray" for n in names]
        ax.barh(names[::-1], meds[::-1], xerr=[lo[::-1], hi[::-1]], color=colors[::-1])
        for y, med in enumerate(meds[::-1]):
            ax.annotate(
                fmt(med, metric.unit),
                (med, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        if meds and min(meds) > 0 and max(meds) / min(meds) > 50:
            ax.set_xscale("log")
        ax.set_title(f"{bench.group}. {bench.title}", fontsize=9)
        ax.set_xlabel(
            metric.label + ("" if metric.higher_is_better else " (lower is better)"), fontsize=8
        )
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(benches) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
