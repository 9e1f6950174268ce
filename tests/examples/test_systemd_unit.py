"""examples/systemd/shmring-supervisor.service: the unit as a file (sections,
keys, a command line ``shmring supervisor`` accepts), installed as its
comment says for this test's own venv, verified by ``systemd-analyze
verify`` where that can run, and its ``ExecStart=`` run for real.

systemd-analyze is usually missing (or cannot run) in CI, so only that one
check depends on it; everything else runs everywhere.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shmring._supervisor.command import add_arguments

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "examples" / "systemd" / "shmring-supervisor.service"
URI_SCHEMES = ("http://", "https://", "file:", "info:", "man:")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as sections of keys, each with its values in order (a key
    may repeat). Raises AssertionError on a line that is not a section, a
    ``key=value``, a comment or blank."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            current = sections.setdefault(s[1:-1], {})
            continue
        assert current is not None and "=" in s, f"line {n} is not key=value: {line!r}"
        key, value = (part.strip() for part in s.split("=", 1))
        current.setdefault(key, []).append(value)
    return sections


def exec_start(unit: dict[str, dict[str, list[str]]]) -> list[str]:
    (line,) = unit["Service"]["ExecStart"]
    return shlex.split(line)


def supervisor_args(argv: list[str]) -> argparse.Namespace:
    """Parse what follows ``shmring supervisor`` as the command does."""
    p = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(p)
    return p.parse_args(argv)


def install(tmp: Path) -> Path:
    """Run the unit comment's ``sed`` line from the checkout, as a user with
    this test's venv active would, into a temporary home."""
    (sed,) = [ln.lstrip("#").strip() for ln in UNIT.read_text().splitlines()
              if ln.lstrip("#").strip().startswith("sed ")]
    home = tmp / "home"
    (home / ".config" / "systemd" / "user").mkdir(parents=True)
    env = dict(os.environ, HOME=str(home), VIRTUAL_ENV=sys.prefix, PWD=str(ROOT))
    subprocess.run(["sh", "-c", sed], cwd=ROOT, env=env, check=True, timeout=30)
    return home / ".config" / "systemd" / "user" / UNIT.name


def test_the_unit_has_what_systemd_and_a_reader_need() -> None:
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    assert unit["Unit"]["Description"]
    (docs,) = unit["Unit"]["Documentation"]
    uris = docs.split()
    assert uris and all(u.startswith(URI_SCHEMES) for u in uris), uris
    assert not any("systemd" in u for u in uris if u.startswith("man:")), "systemd's own page"
    assert any(u.endswith("/README.md") for u in uris), "the project's docs"
    assert unit["Service"]["Type"] == ["simple"]
    assert unit["Service"]["KillSignal"] == ["SIGTERM"]
    assert unit["Install"]["WantedBy"] == ["default.target"]


def test_systemd_unit_runs_a_command_the_supervisor_accepts() -> None:
    argv = exec_start(parse_unit(UNIT.read_text()))
    # A venv's own command, never the system Python (it has no shmring).
    assert argv[0] == "%h/.venv/bin/shmring" and argv[1] == "supervisor", argv
    args = supervisor_args(argv[2:])
    assert args.namespace == "default" and args.exit_when_idle is None
    assert not args.daemonize, "Type=simple: the service must stay in the foreground"


def test_readme_installs_it_with_the_same_command() -> None:
    (sed,) = [ln.lstrip("#").strip() for ln in UNIT.read_text().splitlines()
              if ln.lstrip("#").strip().startswith("sed ")]
    assert f"$ {sed}" in (UNIT.parent / "README.md").read_text()


def test_installed_for_this_venv_it_points_at_it(tmp_path: Path) -> None:
    installed = install(tmp_path)
    unit = parse_unit(installed.read_text())
    argv = exec_start(unit)
    assert argv[0] == os.path.join(sys.prefix, "bin", "shmring")
    assert all(u.startswith(f"file:{ROOT}/") for u in unit["Unit"]["Documentation"][0].split())
    assert "%h" not in installed.read_text().split("[Unit]", 1)[1]


def _systemd_analyze_runs() -> bool:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "--version"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not _systemd_analyze_runs(), reason="systemd-analyze is not available here")
def test_systemd_analyze_verifies_the_installed_unit(tmp_path: Path) -> None:
    installed = install(tmp_path)
    if not Path(exec_start(parse_unit(installed.read_text()))[0]).exists():
        pytest.skip("this Python is not a venv with a shmring command")
    done = subprocess.run(["systemd-analyze", "verify", str(installed)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_installed_command_runs_until_sigterm(tmp_path: Path) -> None:
    installed = install(tmp_path)
    argv = exec_start(parse_unit(installed.read_text()))
    if not Path(argv[0]).exists():
        pytest.skip("this Python is not a venv with a shmring command")
    sockets = tmp_path / "sock"
    sockets.mkdir(mode=0o700)
    namespace = f"unit-{os.getpid()}"
    # The unit's own arguments, then a namespace and socket directory of this
    # test's (argparse: the last one wins), so no real supervisor is met.
    proc = subprocess.Popen([*argv, "--namespace", namespace, "--socket-dir", str(sockets)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (sockets / f"{namespace}.sock").exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no socket after 30 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
