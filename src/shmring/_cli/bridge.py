"""``shmring bridge``: carry channels to and from other hosts.

Runs this user's bridge of a namespace in the foreground until SIGINT or
SIGTERM (or ``--stop``); ``--status`` asks the running one what it does;
``--keygen FILE`` writes a CURVE key pair. See docs/bridge.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from .._errors import InvalidArgument
from .._region.names import check_namespace, default_namespace
from . import args as _types
from .stopping import stop_on_signals

HELP = """\
Export local channels to other hosts and import theirs, over ZeroMQ.
hostb$ shmring bridge --listen tcp://0.0.0.0:7470 --export jobs --keys b.key
hosta$ shmring bridge --connect tcp://hostb:7470 --import jobs \\
           --keys a.key --server-key b.key.pub
A bridge without --keys listens on loopback only unless --insecure."""


def _hold(text: str) -> float:
    """--hold: a finite number of seconds, at least 0."""
    value = _types.seconds(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r}: --hold is a finite number of seconds")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``shmring bridge``."""
    p.description = HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--listen", action="append", default=[], metavar="URL",
                   help="accept peers on this ZeroMQ endpoint (tcp://ADDR:PORT, ipc://PATH)")
    p.add_argument("--connect", action="append", default=[], metavar="URL",
                   help="connect to a peer listening there")
    p.add_argument("--export", action="append", default=[], metavar="CHANNEL",
                   help="let peers import this local channel")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="CHANNEL",
                   help="feed a local ring of this name from the peer that exports it")
    p.add_argument("--namespace", default=None,
                   help="namespace of the local channels (default: $SHMRING_NAMESPACE or "
                        "'default')")
    p.add_argument("--name", default="", help="this bridge's name as peers see it "
                                              "(default HOSTNAME/NAMESPACE)")
    p.add_argument("--keys", metavar="FILE", help="this bridge's CURVE key pair (--keygen)")
    p.add_argument("--server-key", metavar="FILE",
                   help="the listening peer's public key (its FILE.pub), for --connect")
    p.add_argument("--authorized", metavar="FILE",
                   help="listening: accept only clients whose public keys this file lists")
    p.add_argument("--insecure", action="store_true",
                   help="allow listening without keys on an address that is not loopback")
    p.add_argument("--link-timeout", type=_types.positive_float, default=5.0, metavar="S",
                   help="seconds of silence after which a peer is down and the channels it "
                        "feeds here are broken (default 5)")
    p.add_argument("--window", type=_types.positive_int, default=8192, metavar="N",
                   help="records in flight per stream, not yet acknowledged (default 8192)")
    p.add_argument("--hold", type=_hold, default=60.0, metavar="S",
                   help="seconds a killed bridge's place in an exported lossless broadcast "
                        "channel is kept for the bridge started again: the channel's producer "
                        "waits for it meanwhile, and nothing is lost; 0: not kept (default 60)")
    p.add_argument("--exit-when-idle", type=_types.positive_float, default=None, metavar="S",
                   help="exit once it exports nothing and no other local process has had a "
                        "ring it feeds open for S seconds (how a bridge started by "
                        "Channel.open(remote=) ends)")
    p.add_argument("--status", action="store_true", help="show what the running bridge does")
    p.add_argument("--stop", action="store_true", help="stop the running bridge")
    p.add_argument("--keygen", metavar="FILE", help="write a new key pair to FILE (and "
                                                    "FILE.pub) and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log each peer and stream")


def _security(args: argparse.Namespace) -> Any:
    """CURVE from --keys/--authorized/--server-key, after the loopback rule
    for every --listen (a bridge without keys says when it listens off
    loopback, and refuses to unless --insecure)."""
    from .._bridge import keys as _keys

    for url in args.listen:
        warning = _keys.check_listen_address(url, bool(args.keys), args.insecure)
        if warning:
            print(f"shmring bridge: warning: {warning}", file=sys.stderr, flush=True)
    if not args.keys:
        if args.server_key or args.authorized:
            raise InvalidArgument("--server-key and --authorized need --keys (this bridge's "
                                  "own key pair: shmring bridge --keygen FILE)")
        return None
    from .._bridge.security import Security

    if args.connect and not args.server_key:
        raise InvalidArgument("--connect with --keys needs --server-key (the peer's FILE.pub)")
    return Security.from_files(args.keys, args.authorized, args.server_key)


def run(args: argparse.Namespace) -> int:
    """Run the bridge (or answer --status, --stop, --keygen)."""
    ns = check_namespace(args.namespace or default_namespace())
    if args.keygen:
        from .._bridge import keys as _keys

        pair = _keys.generate(args.keygen)
        print(f"wrote {args.keygen} (secret, 0600) and {args.keygen}.pub: "
              f"{pair.public.decode()}")
        return 0
    if args.status or args.stop:
        from .._bridge.control import request

        try:
            reply = request(ns, {"op": "status" if args.status else "stop"}, 5.0)
        except (FileNotFoundError, ConnectionRefusedError):
            print(f"shmring: no bridge runs for namespace {ns!r}", file=sys.stderr)
            return 1
        if args.status:
            print(json.dumps(reply.get("status"), indent=2))
        return 0
    from .._bridge.control import Server, take_lock
    from .._bridge.daemon import Bridge, Config
    from .._bridge.memory import keep_large_buffers

    keep_large_buffers()  # before the threads and their arenas: memory.py
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="shmring bridge: %(message)s")
    security = _security(args)
    lock = take_lock(ns)
    stop = threading.Event()
    config = Config(listen=args.listen, connect=args.connect, exports=args.export,
                    imports=args.imports, namespace=ns, name=args.name,
                    link_timeout=args.link_timeout, window=args.window, hold=args.hold,
                    security=security)
    bridge = Bridge(config)
    server = Server(bridge, ns, stop.set)
    try:
        for link in bridge.links:
            if link.listen:
                print(f"shmring bridge: listening on {link.url}", flush=True)
        print(f"shmring bridge: namespace {ns!r}, exports {sorted(bridge.exports)}, "
              f"imports {sorted(bridge.imports)}", flush=True)
        with stop_on_signals() as signalled:
            idle_since: float | None = None
            while not stop.is_set() and not signalled.requested:
                stop.wait(0.2)
                if args.exit_when_idle is None:
                    continue
                now = time.monotonic()
                if not bridge.idle():
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= args.exit_when_idle:
                    print(f"shmring bridge: idle for {args.exit_when_idle:g} s: exiting",
                          flush=True)
                    break
    finally:
        server.close()
        bridge.close()
        os.close(lock)
    return 0
