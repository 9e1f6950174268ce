"""The bridge between two hosts: two network namespaces joined by a veth
pair, each with a /dev/shm and a runtime directory of its own
(``hosts_util``), so nothing can pass except over the network. A channel
created on host b is read on host a; the link is cut and restored, past
and within the link timeout; either bridge is SIGKILLed and started again;
with CURVE keys, a client whose key is not authorized gets nothing. After
each fault the reader has every record exactly once, in order."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from bridge_util import READY, SINK, SOURCE, check_exact, rest
from hosts_util import SHMRING, Host, Pair, two_hosts

PORT = 7470
#: Records a second the source sends: the faults land while it streams.
RATE = 15_000


def bridge(host: Host, *args: str) -> subprocess.Popen[str]:
    """Start ``shmring bridge ARGS`` on ``host``; returns once it is up."""
    p: subprocess.Popen[str] = host.popen([*SHMRING, "bridge", *args], stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
    assert p.stdout is not None
    lines = []
    while True:
        line = p.stdout.readline()
        lines.append(line)
        if not line:
            p.wait(10)
            raise AssertionError(f"bridge on {host.hostname} exited {p.returncode}: "
                                 f"{''.join(lines)}")
        if line.startswith(READY):
            return p


def kill(p: subprocess.Popen[Any]) -> None:
    """SIGKILL ``p`` and reap it."""
    p.kill()
    p.wait(10)


Proc = subprocess.Popen[str]


def start(pair: Pair, n: int, *, a_args: tuple[str, ...] = (), b_args: tuple[str, ...] = (),
          name: str = "jobs", pattern: str = "spsc") -> tuple[Proc, Proc, Proc, Proc]:
    """b: a source of ``n`` records and a bridge exporting it; a: a bridge
    importing it and a sink. Returns (source, b's bridge, a's bridge, sink)."""
    a, b = pair
    src = b.python_popen(SOURCE, name, str(n), pattern, "8", str(RATE), stdout=subprocess.PIPE,
                         text=True)
    bb = bridge(b, "--listen", f"tcp://0.0.0.0:{PORT}", "--export", name, *b_args)
    ab = bridge(a, "--connect", f"tcp://hostb:{PORT}", "--import", name, *a_args)
    sink = a.python_popen(SINK, name, stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None and src.stdout is not None
    assert sink.stdout.readline().strip() == "joined"
    assert src.stdout.readline().strip() == "consumer"
    return src, bb, ab, sink


def finish(src: subprocess.Popen[str], sink: subprocess.Popen[str], n: int) -> int:
    """Wait for both ends; the sink has 0..n-1 exactly. How often it saw
    Broken."""
    out = rest(sink)
    assert sink.returncode == 0, out[-2000:]
    lines = out.splitlines()
    assert lines, "the sink printed nothing"
    try:
        got = json.loads(lines[-1])
    except ValueError:
        raise AssertionError(f"the sink printed {len(lines)} lines: "
                             f"{[ln[:60] for ln in lines]!r}") from None
    check_exact(got["got"], n)
    src.wait(60)
    assert src.returncode == 0
    broken: int = got["broken"]
    return broken


def _running(pair: Pair) -> None:
    time.sleep(0.5)  # let records flow before the fault


def test_a_cut_link_loses_nothing_within_and_past_the_link_timeout() -> None:
    n = 8 * RATE
    with two_hosts() as pair:
        src, _bb, _ab, sink = start(pair, n, a_args=("--link-timeout", "2"),
                                    b_args=("--insecure",))
        _running(pair)
        pair.link_down()
        time.sleep(0.5)  # within the timeout: nothing breaks
        pair.link_up()
        assert src.poll() is None
        _running(pair)
        pair.link_down()
        time.sleep(3.5)  # past it: the ring on a is broken for its readers (the sink waits)
        pair.link_up()
        assert src.poll() is None, "the source finished before the faults: make it longer"
        assert finish(src, sink, n) >= 1  # past the timeout, the reader was told


@pytest.mark.parametrize("victim", ["b", "a"])
@pytest.mark.parametrize("pattern", ["spsc", "mpsc"])
def test_a_killed_bridge_started_again_loses_and_duplicates_nothing(victim: str,
                                                                    pattern: str) -> None:
    n = 6 * RATE
    with two_hosts() as pair:
        a, b = pair
        src, bb, ab, sink = start(pair, n, b_args=("--insecure",), pattern=pattern)
        for _ in range(2):
            _running(pair)
            if victim == "b":
                kill(bb)
                bb = bridge(b, "--listen", f"tcp://0.0.0.0:{PORT}", "--export", "jobs",
                            "--insecure")
            else:
                kill(ab)
                ab = bridge(a, "--connect", f"tcp://hostb:{PORT}", "--import", "jobs")
        assert src.poll() is None, "the source finished before the faults: make it longer"
        finish(src, sink, n)


def test_curve_keys_let_only_an_authorized_client_in(tmp_path: Any) -> None:
    n = 2000
    with two_hosts() as pair:
        a, b = pair
        for who in ("a", "b", "stranger"):
            subprocess.run([*SHMRING, "bridge", "--keygen", str(tmp_path / f"{who}.key")],
                           check=True, capture_output=True)
        (tmp_path / "authorized").write_text((tmp_path / "a.key.pub").read_text())
        b_keys = ("--keys", str(tmp_path / "b.key"), "--authorized", str(tmp_path / "authorized"))
        # A stranger (a key b does not list) gets nothing, not even the channel's shape.
        src = b.python_popen(SOURCE, "jobs", str(n), stdout=subprocess.PIPE, text=True)
        bridge(b, "--listen", f"tcp://0.0.0.0:{PORT}", "--export", "jobs", *b_keys)
        ab = bridge(a, "--connect", f"tcp://hostb:{PORT}", "--import", "jobs",
                    "--keys", str(tmp_path / "stranger.key"),
                    "--server-key", str(tmp_path / "b.key.pub"))
        time.sleep(3)
        assert not any(x.startswith("shmring.") and x.endswith(".jobs") for x in a.shm_names())
        kill(ab)
        # The authorized key gets everything.
        bridge(a, "--connect", f"tcp://hostb:{PORT}", "--import", "jobs",
               "--keys", str(tmp_path / "a.key"), "--server-key", str(tmp_path / "b.key.pub"))
        sink = a.python_popen(SINK, "jobs", stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None and src.stdout is not None
        assert sink.stdout.readline().strip() == "joined"
        finish(src, sink, n)


def test_a_bridge_without_keys_listens_on_loopback_only_unless_told() -> None:
    with two_hosts() as pair:
        a, _b = pair
        r = a.shmring("bridge", "--listen", f"tcp://0.0.0.0:{PORT}", check=False)
        assert r.returncode == 2
        assert "without CURVE keys" in r.stderr and "--insecure" in r.stderr
        p = a.popen([*SHMRING, "bridge", "--listen", f"tcp://0.0.0.0:{PORT}", "--insecure"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pair.wait_port(a, PORT)
        p.terminate()
        _out, err = p.communicate(timeout=30)
        assert "warning" in err and "0.0.0.0" in err
