"""``shmring supervisor``: the command that runs a supervisor in the
foreground (or daemonized) until SIGTERM/SIGINT.

Exactly one supervisor serves a namespace: the :class:`Supervisor` takes an
``flock`` on ``<ns>.lock``. Run by hand or by systemd (no
``--exit-when-idle``), the command waits for that lock and so takes over from
an auto-started supervisor when it exits; an auto-started one (with
``--exit-when-idle``) gives way to a supervisor already running.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import resource
import signal
from collections.abc import Callable

from .._errors import InvalidArgument
from .._region.names import check_namespace, default_namespace
from . import wire as _ipc
from .lease import DEFAULT_LEASE
from .revoke import DEFAULT_CLAIM_TIMEOUT
from .server import AlreadyRunning, Supervisor

log = logging.getLogger("shmring.supervisor")


#: Exit status after SIGINT (Ctrl-C), as shells report a command it ended.
INTERRUPTED = 130
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _namespace(text: str) -> str:
    try:
        return check_namespace(text)
    except InvalidArgument as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds, zero or more")
    return value


def _from_env(var: str) -> Callable[[str], float]:
    """Seconds, saying so when a bad value came from ``$var``."""
    def parse(text: str) -> float:
        try:
            return _seconds(text)
        except argparse.ArgumentTypeError as e:
            if text == os.environ.get(var):
                raise argparse.ArgumentTypeError(f"{e} (from ${var})") from None
            raise
    return parse


_claim_timeout = _from_env("SHMRING_CLAIM_TIMEOUT")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring supervisor``; argparse refuses bad values."""
    p.add_argument("--namespace", "-n", type=_namespace, help="namespace to supervise "
                   "(default: $SHMRING_NAMESPACE or 'default')")
    p.add_argument("--socket-dir", help="directory of the socket (default: "
                   "$SHMRING_SOCKET_DIR, $XDG_RUNTIME_DIR/shmring or /tmp/shmring-<uid>)")
    p.add_argument("--exit-when-idle", type=_seconds, metavar="SECONDS",
                   help="exit after this long with no region to watch (auto-start)")
    p.add_argument("--startup-grace", type=_seconds, default=1.0, metavar="SECONDS",
                   help="after a restart, wait this long for clients to re-register "
                   "before judging table entries dead (default 1)")
    # A string default goes through `type` when the option is absent, so a bad
    # $SHMRING_CLAIM_TIMEOUT is refused like a bad --claim-timeout, and only
    # when this command runs.
    p.add_argument("--claim-timeout", type=_claim_timeout, metavar="SECONDS",
                   default=os.environ.get("SHMRING_CLAIM_TIMEOUT", str(DEFAULT_CLAIM_TIMEOUT)),
                   help="revoke a producer's claim held longer than this (stopped or "
                   "stuck), so consumers go on; 0 never (default $SHMRING_CLAIM_TIMEOUT "
                   f"or {DEFAULT_CLAIM_TIMEOUT:g})")
    p.add_argument("--lease-timeout", type=_from_env("SHMRING_LEASE_TIMEOUT"), metavar="SECONDS",
                   default=os.environ.get("SHMRING_LEASE_TIMEOUT", str(DEFAULT_LEASE)),
                   help="hand an mpmc record a consumer has held longer than this (stopped "
                   "or stuck) to the other consumers, for channels created without lease=; "
                   f"0 never (default $SHMRING_LEASE_TIMEOUT or {DEFAULT_LEASE:g})")
    p.add_argument("--daemonize", action="store_true",
                   help="fork into the background (log to <socket-dir>/<ns>.log)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=_LEVELS,
                   metavar="LEVEL", help=f"logging level: {', '.join(_LEVELS)} (default INFO)")
    p.add_argument("--log-file", help="log here instead of stderr")


def main(args: argparse.Namespace) -> int:
    """``shmring supervisor``: serve in the foreground until SIGTERM (exit
    status 0) or SIGINT, i.e. Ctrl-C (exit status 130)."""
    if args.daemonize and os.fork():
        os._exit(0)  # the launcher returns at once; the daemon is init's child
    ns = check_namespace(args.namespace or default_namespace())
    log_file = args.log_file
    if log_file is None and args.daemonize:
        log_file = _ipc.paths(ns, args.socket_dir)["log"]
        with contextlib.suppress(OSError):
            if os.path.getsize(log_file) > 1 << 20:
                os.truncate(log_file, 0)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        filename=log_file,
    )
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a pidfd and a socket per client
    sup = Supervisor(ns, socket_dir=args.socket_dir, idle_exit=args.exit_when_idle,
                     startup_grace=args.startup_grace, claim_timeout=args.claim_timeout,
                     lease_timeout=args.lease_timeout)

    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stopped_by.append(signum)
        sup.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        # Run by hand or by systemd, take over from an auto-started one when
        # it exits; auto-started ones simply give way.
        sup.run(wait=args.exit_when_idle is None)
    except AlreadyRunning as e:
        log.info("%s: nothing to do", e)
    return INTERRUPTED if signal.SIGINT in stopped_by else 0
