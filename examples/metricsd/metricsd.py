"""metricsd: serve the metrics that processes count in shared memory
(``shmring.metrics``) as Prometheus text over HTTP.

Processes count with ``shmring.metrics.Counter``, ``Gauge`` and
``Histogram`` in slabs of one shared region; this daemon folds the slabs of
processes that died into the region's totals (so nothing they counted is
lost, and their slabs are reused) and answers ``GET /metrics`` with the sum
over every process. It holds no counts itself: kill it, start it again
under the same name, and the totals are all there. ::

    $ python examples/metricsd/metricsd.py run --port 9464
    $ python examples/metricsd/metricsd.py status --json

``run`` stops cleanly on SIGTERM or Ctrl-C; ``unlink`` removes the region
(and its totals) once no process maps it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import ThreadingHTTPServer
from types import FrameType

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

import shmring
from shmring.metrics import DEFAULT_NAME, Registry
from shmring.metrics._values import Hook
from shmring.metrics.prometheus import Collector

#: Fold steps ``--crash-at`` can stop at (see docs/metrics.md).
STEPS = ("copied", "adding", "added", "committed", "zeroed", "freed")


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _crash_hook(step: str | None) -> Hook | None:
    if step is None:
        return None

    def hook(at: str) -> None:
        if at == step:
            print(f"metricsd: --crash-at {step}: killing myself", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def run(args: argparse.Namespace) -> int:
    """Serve /metrics until SIGTERM or SIGINT."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    reg = Registry(args.name, namespace=args.namespace)
    try:
        hook = _crash_hook(args.crash_at)
        scrape = CollectorRegistry()
        scrape.register(Collector(reg, hook))
        try:
            server = _Server((args.host, args.port), MetricsHandler.factory(scrape))
        except OSError as e:
            print(f"metricsd: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
            return 1
        port = server.server_address[1]
        try:
            reg.take_daemon(port)
        except shmring.RoleTaken as e:
            server.server_close()
            print(f"metricsd: {e}", file=sys.stderr)
            return 1
        thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        thread.start()
        print(f"metricsd: serving http://{args.host}:{port}/metrics for {reg.segment} "
              f"(pid {os.getpid()})", flush=True)
        try:
            while not stop.wait(args.fold_every):
                folded = reg.fold(hook=hook)
                if folded and args.verbose:
                    print(f"metricsd: folded {folded} dead process(es)", flush=True)
        finally:
            server.shutdown()
            server.server_close()
            reg.drop_daemon()
        print("metricsd: stopped", flush=True)
        return 0
    finally:
        reg.close()


def status(args: argparse.Namespace) -> int:
    """Print what the region holds (``--json``: one JSON object)."""
    try:
        reg = Registry(args.name, namespace=args.namespace, create=False)
    except shmring.RegionNotFound:
        msg = f"no metrics region {args.name!r} in namespace {_ns(args)!r}"
        print(json.dumps({"name": args.name, "exists": False}) if args.json
              else f"metricsd: {msg}")
        return 1
    with reg:
        st = reg.status()
        st["exists"] = True
        st["families"] = [{"name": f.name, "kind": f.kind, "series": len(f.series)}
                          for f in reg.read().families]
    if args.json:
        print(json.dumps(st))
        return 0
    d = st["daemon"]
    who = ("no daemon" if d is None else
           f"daemon pid {d['pid']} on port {d['port']}" + ("" if d["alive"] else " (dead)"))
    print(f"{st['segment']}: {who}")
    print(f"  {st['metrics']} metrics, {st['series']} series "
          f"(entries {st['entries']['used']}/{st['entries']['size']}, "
          f"values {st['values']['used']}/{st['values']['size']})")
    print(f"  {st['processes']} processes counting (of {st['slabs']} slabs), "
          f"{st['folded']} dead ones folded")
    for f in st["families"]:
        print(f"  {f['kind']:<9} {f['name']} ({f['series']} series)")
    return 0


def unlink(args: argparse.Namespace) -> int:
    """Remove the region's name (its totals go with the last process)."""
    try:
        reg = Registry(args.name, namespace=args.namespace, create=False)
    except shmring.RegionNotFound:
        print(f"metricsd: no metrics region {args.name!r} in namespace {_ns(args)!r}")
        return 1
    with reg:
        reg.unlink()
    print(f"metricsd: removed {reg.segment}")
    return 0


def _ns(args: argparse.Namespace) -> str:
    return args.namespace or os.environ.get("SHMRING_NAMESPACE", "default")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="metricsd", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=DEFAULT_NAME,
                        help=f"metrics region name (default {DEFAULT_NAME})")
    common.add_argument("--namespace", default=None,
                        help="shmring namespace (default $SHMRING_NAMESPACE or 'default')")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", parents=[common], help="serve /metrics over HTTP")
    r.add_argument("--port", type=int, required=True, help="TCP port (0: any free one)")
    r.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    r.add_argument("--fold-every", type=float, default=1.0, metavar="S",
                   help="seconds between folds of dead processes (default 1; scrapes fold too)")
    r.add_argument("--verbose", action="store_true", help="say when dead processes are folded")
    r.add_argument("--crash-at", choices=STEPS, default=None,
                   help="testing: SIGKILL this daemon at that step of its first fold")
    s = sub.add_parser("status", parents=[common], help="what the region holds")
    s.add_argument("--json", action="store_true", help="one JSON object")
    sub.add_parser("unlink", parents=[common], help="remove the region and its totals")
    args = ap.parse_args(argv)
    if args.command == "run" and not 0 <= args.port <= 65535:
        ap.error(f"--port {args.port}: must be 0-65535")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the command; its exit status."""
    args = parse_args(argv)
    commands = {"run": run, "status": status, "unlink": unlink}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
