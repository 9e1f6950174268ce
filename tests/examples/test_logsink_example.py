"""examples/logsink/: the systemd unit (parsed; its ExecStart run for real,
with this checkout and this venv in place of %h), the example app logging
through the daemon it starts, ``status`` in text and ``--json``, a clean
SIGTERM, and a second sink on the same channel refused.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from logsink_util import (
    APP,
    DAEMON,
    ROOT,
    UNIT,
    env_for,
    lines,
    quick_status,
    start_sink,
    status,
    stop,
    wait_for,
)
from test_systemd_unit import exec_start, parse_unit


def _filled(line: str, home: Path) -> list[str]:
    """A unit command line as installed by the unit's sed line, for this
    checkout and venv, with ``home`` as %h."""
    line = line.replace("%h/.venv/bin/python", sys.executable)
    line = line.replace("%h/shmring", str(ROOT)).replace("%h", str(home))
    return shlex.split(line)


def test_unit_parses_and_names_the_daemon() -> None:
    unit = parse_unit(UNIT.read_text())
    argv = exec_start(unit)
    assert argv[:2] == ["%h/.venv/bin/python", "%h/shmring/examples/logsink/logsinkd.py"]
    assert argv[2] == "run" and "--file" in argv and "--max-bytes" in argv
    svc = unit["Service"]
    assert svc["Type"] == ["simple"] and svc["KillSignal"] == ["SIGTERM"]
    assert svc["Restart"] == ["on-failure"]
    assert unit["Install"]["WantedBy"] == ["default.target"]
    assert "sed -e" in UNIT.read_text()  # says how to fill in the venv


def test_exec_start_runs_and_the_app_logs_through_it(ns: str, tmp_path: Path) -> None:
    unit = parse_unit(UNIT.read_text())
    (pre,) = unit["Service"]["ExecStartPre"]
    subprocess.run(_filled(pre, tmp_path), check=True, timeout=30)
    argv = _filled(unit["Service"]["ExecStart"][0], tmp_path)
    logfile = tmp_path / ".local" / "state" / "shmring" / "logsink.log"
    assert argv[argv.index("--file") + 1] == str(logfile)
    sink = subprocess.Popen(argv, env=env_for(ns), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: quick_status(ns)["running"], what="the unit's sink")
        done = subprocess.run([sys.executable, str(APP), "--count", "50", "--json"],
                              env=env_for(ns), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["sent"] == 50 and summary["dropped"] == 0
        wait_for(lambda: quick_status(ns)["written"] == 50, what="50 records written")
        text = logfile.read_text()
        assert text.count(" app INFO record ") == 49 and " app ERROR record 0 of 50" in text
        assert "KeyError: 'missing'" in text  # the traceback, formatted by the app
        st = status(ns)
        assert st["pid"] == sink.pid and st["drops_reported"] == 0 and st["pending"] == 0
        human = subprocess.run([sys.executable, str(DAEMON), "status"], env=env_for(ns),
                               capture_output=True, text=True, timeout=30)
        assert human.returncode == 0
        assert f"running, pid {sink.pid}" in human.stdout and "50 records written" in human.stdout
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(10) == 0
    finally:
        stop(sink)
    st = status(ns)
    assert not st["running"] and st["pid"] is None and st["pending"] == 0
    human = subprocess.run([sys.executable, str(DAEMON), "status"], env=env_for(ns),
                           capture_output=True, text=True, timeout=30)
    assert human.returncode == 3 and "not running (0 records waiting" in human.stdout


def test_app_without_sink_reports_drops_when_it_comes(ns: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(APP), "--count", "20", "--json"],
                          env=env_for(ns), capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["dropped"] == 20
    assert status(ns) == {"channel": "logsink", "running": False, "pid": None,
                          "started": None, "written": None, "drops_reported": None,
                          "undecodable": None, "pending": None, "capacity": None,
                          "fill": None, "sent_total": None, "handlers": None}
    log = tmp_path / "sink.log"
    sink = start_sink(ns, log)
    try:
        second = subprocess.run([sys.executable, str(DAEMON), "run"], env=env_for(ns),
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 1 and "another sink runs" in second.stderr
        assert f"(pid {sink.pid})" in second.stderr
    finally:
        stop(sink)
    assert lines(log) == []


def test_bad_arguments_are_refused() -> None:
    done = subprocess.run([sys.executable, str(DAEMON), "run", "--max-bytes", "-1"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--max-bytes" in done.stderr
