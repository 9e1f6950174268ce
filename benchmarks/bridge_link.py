"""Two sides joined by ``shmring bridge`` over one TCP link on loopback.

Each side is a supervisor namespace of its own on this machine (``a`` and
``b``). Side ``b`` runs a bridge listening on a free loopback port that
exports the channels created there and imports the ones created on ``a``;
side ``a`` runs one connecting to it that does the opposite. Both bridges are
``python -m shmring bridge`` processes; every stream of every channel goes
over the same TCP connection. :meth:`BridgedLink.close` stops the bridges
(SIGTERM), closes the channels and removes what the bridges left behind
(imported rings are persistent on purpose: they outlive their bridge).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import shmring
from shmring._bridge.control import request

#: The line a bridge prints once it is up.
READY = "shmring bridge: namespace"
#: Seconds to wait for a bridge to start, and for its streams to flow.
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port nobody listens on now (on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def shm_entries(namespaces: list[str]) -> list[str]:
    """The /dev/shm entries of these namespaces."""
    prefixes = tuple(f"shmring.{ns}." for ns in namespaces)
    return sorted(e for e in os.listdir("/dev/shm") if e.startswith(prefixes))


class _Bridge:
    """One ``shmring bridge`` process and the lines it printed."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "shmring", "bridge", *args],
                                     env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                raise RuntimeError(f"shmring bridge exited with {self.proc.returncode}: "
                                   f"{''.join(self.lines)}")
            self.lines.append(line)
            if line.startswith(READY):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"shmring bridge not up: {''.join(self.lines)}")
        # Keep reading what it prints (warnings), so it never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        """The bridge's process id."""
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class BridgedLink:
    """Channels ``b_channels`` made on side b and ``a_channels`` on side a
    (``name -> (capacity, max_message)``, spsc), each imported by the other
    side's bridge, all over one TCP link on ``127.0.0.1``."""

    def __init__(self, b_channels: dict[str, tuple[int, int]],
                 a_channels: dict[str, tuple[int, int]], tag: str = "shmbench") -> None:
        pid = os.getpid()
        self.ns = {"a": f"{tag}-a-{pid}", "b": f"{tag}-b-{pid}"}
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.channels: list[shmring.Channel] = []
        self.bridges: dict[str, _Bridge] = {}
        self._imported = {"a": sorted(b_channels), "b": sorted(a_channels)}
        try:
            for side, specs in (("b", b_channels), ("a", a_channels)):
                for name, (capacity, max_message) in specs.items():
                    self.channels.append(shmring.Channel.create(
                        name, capacity, "spsc", max_message=max_message,
                        namespace=self.ns[side]))
            self.bridges["b"] = _Bridge(
                ["--listen", self.url, *_each("--export", b_channels),
                 *_each("--import", a_channels)], self.env("b"))
            self.bridges["a"] = _Bridge(
                ["--connect", self.url, *_each("--import", b_channels),
                 *_each("--export", a_channels)], self.env("a"))
            self._wait_streaming()
        except BaseException:
            self.close()
            raise

    def env(self, side: str) -> dict[str, str]:
        """The environment of a program on ``side``."""
        return dict(os.environ, SHMRING_NAMESPACE=self.ns[side], SHMRING_SUPERVISOR_IDLE="1",
                    PYTHONUNBUFFERED="1")

    def status(self, side: str) -> dict[str, Any]:
        """What the bridge of ``side`` says it does."""
        st: dict[str, Any] = request(self.ns[side], {"op": "status"}, 5.0)["status"]
        return st

    def counters(self, name: str) -> dict[str, int]:
        """Records and DATA messages the exporter of ``name`` has sent, and
        ACK messages its importer has sent, so far."""
        exporter, importer = ("b", "a") if name in self._imported["a"] \
            else ("a", "b")
        out = [s for s in self.status(exporter)["outbound"] if s["channel"] == name]
        inb = [s for s in self.status(importer)["inbound"] if s["channel"] == name]
        return {"records": sum(s["sent"] for s in out),
                "batches": sum(s.get("batches", 0) for s in out),
                "acks": sum(s.get("acks", 0) for s in inb)}

    def _wait_streaming(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            ok = True
            for side, names in self._imported.items():
                try:
                    inbound = {s["channel"] for s in self.status(side)["inbound"]}
                except (OSError, KeyError, shmring.ShmringError):
                    inbound = set()
                ok = ok and set(names) <= inbound
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the bridges did not stream every channel within "
                                   f"{START_TIMEOUT:.0f} s: a {self.bridges['a'].lines}, "
                                   f"b {self.bridges['b'].lines}")
            time.sleep(0.05)

    def close(self) -> list[str]:
        """Stop the bridges, close the channels, remove the imported rings;
        the /dev/shm entries of both namespaces still there after 10 s."""
        for br in self.bridges.values():
            br.stop()
        for ch in self.channels:
            with contextlib.suppress(shmring.ShmringError):
                ch.close()
        for side, names in self._imported.items():
            for name in names:  # persistent: remove them
                with contextlib.suppress(shmring.ShmringError):
                    ch = shmring.Channel.open(name, namespace=self.ns[side])
                    ch.unlink()
                    ch.close()
        namespaces = list(self.ns.values())
        deadline = time.monotonic() + 10.0
        while (left := shm_entries(namespaces)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left


def _each(flag: str, names: dict[str, Any]) -> list[str]:
    return [x for name in sorted(names) for x in (flag, name)]
