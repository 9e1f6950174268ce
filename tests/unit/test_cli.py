"""``shmring ls``, ``inspect``, ``gc`` and ``supervisor``: tables for people,
JSON for scripts, and gc working with no supervisor at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from supervisor_util import Env, supervisor_env

import shmring
from shmring import _core
from shmring import _layout as L
from shmring._cli.main import main


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with supervisor_env(monkeypatch) as e:
        monkeypatch.setenv("SHMRING_SUPERVISOR", "0")  # gc must work without one
        yield e


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def _orphan(name: str, *, persistent: bool = False) -> shmring.Channel:
    """A region whose only process slot names a dead process."""
    ch = shmring.Channel.create(name, capacity=4096, persistent=persistent)
    buf = ch.region.buf
    assert buf is not None
    _core.store(buf, L.slot_offset(ch._slot) + L.SLOT_PID, 4_000_000)
    return ch


def _release(ch: shmring.Channel) -> None:
    buf = ch.region.buf
    assert buf is not None
    _core.store(buf, L.slot_offset(ch._slot) + L.SLOT_PID, os.getpid())
    ch.close()
    ch.unlink()


def test_ls_table_and_json(env: Env, uname: str, capsys: pytest.CaptureFixture[str]) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc")
    try:
        tx, rx = ch.producer(), ch.consumer()
        for _ in range(3):
            tx.send(b"x" * 100)
        rx.recv()
        code, out = run(capsys, "ls", "--namespace", env.namespace)
        assert code == 0
        header, row = out.splitlines()
        assert header.split()[:4] == ["NAMESPACE", "NAME", "PATTERN", "SIZE"]
        assert uname in row and "mpmc" in row
        assert f"{os.getpid()}:producer" in row and f"{os.getpid()}:consumer" in row
        code, out = run(capsys, "ls", "--namespace", env.namespace, "--json")
        (entry,) = json.loads(out)
        assert entry["name"] == uname and entry["pattern"] == "mpmc"
        assert entry["persistent"] is False and entry["verdict"] == "live"
        assert entry["messages_in"] == 3 and entry["messages_out"] == 1
        assert entry["fill"] == 2 * 128  # two records of 100 bytes wait
        # The channel's own slot is lent to its first endpoint, the producer.
        assert sorted(s["role"] for s in entry["slots"]) == ["consumer", "producer"]
        tx.close()
        rx.close()
        (entry,) = json.loads(run(capsys, "ls", "-n", env.namespace, "--json")[1])
        assert (entry["messages_in"], entry["messages_out"]) == (3, 1)  # kept when closed
    finally:
        ch.close()
        ch.unlink()
    assert "no regions" in run(capsys, "ls", "--namespace", env.namespace)[1]


def test_inspect(env: Env, uname: str, capsys: pytest.CaptureFixture[str]) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="broadcast", persistent=True)
    try:
        ch.producer().send(b"hello")
        code, out = run(capsys, "inspect", uname, "--namespace", env.namespace)
        assert code == 0
        assert "pattern:" in out and "broadcast" in out and "persistent:" in out
        assert "counters:" in out and "attach table:" in out and "producer" in out
        data = json.loads(run(capsys, "inspect", uname, "-n", env.namespace, "--json")[1])
        assert data["counters"]["msgno"] == 1 and data["persistent"] is True
        assert data["created_ns"] == ch.region.created_ns
    finally:
        ch.close()
        ch.unlink()
    code = main(["inspect", uname, "--namespace", env.namespace])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("shmring: error: no region") and err.count("\n") == 1


def test_gc_lists_then_removes_orphans(env: Env, uname: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    live = shmring.Channel.create(uname + "-live", capacity=4096)
    dead = _orphan(uname + "-dead")
    kept = _orphan(uname + "-kept", persistent=True)
    try:
        code, out = run(capsys, "gc", "--namespace", env.namespace)
        assert code == 0
        assert uname + "-dead" in out and "orphan" in out
        assert uname + "-kept" in out and "persistent (kept" in out
        assert uname + "-live" not in out
        assert "nothing removed" in out
        assert os.path.exists(env.shm(uname + "-dead"))  # lists by default
        found = json.loads(run(capsys, "gc", "-n", env.namespace, "--json")[1])
        assert {f["name"]: f["verdict"] for f in found["found"]}[uname + "-dead"] == "orphan"
        assert found["removed"] == []
        code, out = run(capsys, "gc", "--namespace", env.namespace, "--yes")
        assert "removed 1 region" in out
        assert not os.path.exists(env.shm(uname + "-dead"))
        assert os.path.exists(env.shm(uname + "-kept"))
        res = json.loads(run(capsys, "gc", "-n", env.namespace, "--yes", "--persistent",
                             "--json")[1])
        assert res["removed"] == [f"/shmring.{env.namespace}.{uname}-kept"]
        assert os.path.exists(env.shm(uname + "-live"))
        assert "no orphaned regions" in run(capsys, "gc", "-n", env.namespace)[1]
    finally:
        live.close()
        live.unlink()
        _release(dead)
        _release(kept)


def test_gc_needs_no_supervisor(env: Env, uname: str) -> None:
    ch = _orphan(uname)
    try:
        p = subprocess.run([sys.executable, "-m", "shmring", "gc", "-n", env.namespace, "--yes"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "removed 1 region" in p.stdout
        assert not os.path.exists(env.sock)
    finally:
        _release(ch)


def test_supervisor_command_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["supervisor", "--help"])
    out = capsys.readouterr().out
    assert "--namespace" in out and "--exit-when-idle" in out
