"""examples/metricsd: its systemd unit (parsed, installed with the sed
line of its comment for this test's venv, its ``ExecStart=`` run for real
and scraped over HTTP until SIGTERM), and its README (the commands it shows
are the programs' own). The README's Python block is run by test_docs.py;
the daemon's behaviour under kills by tests/multiprocess/test_metricsd*.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

from test_systemd_unit import exec_start, parse_unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "metricsd"
UNIT = EXAMPLE / "shmring-metricsd.service"
README = EXAMPLE / "README.md"


def metricsd() -> ModuleType:
    spec = importlib.util.spec_from_file_location("metricsd", EXAMPLE / "metricsd.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sed_line() -> str:
    (sed,) = [ln.lstrip("#").strip() for ln in UNIT.read_text().splitlines()
              if ln.lstrip("#").strip().startswith("sed ")]
    return sed


def test_the_unit_has_what_systemd_and_a_reader_need() -> None:
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    assert unit["Unit"]["Description"]
    uris = unit["Unit"]["Documentation"][0].split()
    assert any(u.endswith("examples/metricsd/README.md") for u in uris), uris
    assert unit["Service"]["Type"] == ["simple"]
    assert unit["Service"]["KillSignal"] == ["SIGTERM"]
    assert unit["Install"]["WantedBy"] == ["default.target"]


def test_exec_start_is_a_command_line_metricsd_accepts() -> None:
    argv = exec_start(parse_unit(UNIT.read_text()))
    assert argv[0] == "%h/.venv/bin/python", "the venv's interpreter, not the system's"
    assert argv[1] == "%h/shmring/examples/metricsd/metricsd.py"
    args = metricsd().parse_args(argv[2:])
    assert (args.command, args.port, args.host, args.namespace) == (
        "run", 9464, "127.0.0.1", "default")


def test_readme_installs_it_with_the_same_command() -> None:
    assert sed_line() in README.read_text()


def test_installed_for_this_venv_it_runs_and_serves(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "systemd" / "user").mkdir(parents=True)
    env = dict(os.environ, HOME=str(home), VIRTUAL_ENV=sys.prefix, PWD=str(ROOT))
    subprocess.run(["sh", "-c", sed_line()], cwd=ROOT, env=env, check=True, timeout=30)
    installed = home / ".config" / "systemd" / "user" / UNIT.name
    argv = exec_start(parse_unit(installed.read_text()))
    assert argv[:2] == [os.path.join(sys.prefix, "bin", "python"),
                        str(EXAMPLE / "metricsd.py")]
    assert Path(argv[0]).exists() and Path(argv[1]).exists()
    # The unit's own arguments, then a free port and a namespace of this
    # test's (argparse: the last one wins), so nothing real is met.
    ns = f"unit-{os.getpid()}-metricsd"
    run_env = dict(os.environ, SHMRING_SUPERVISOR_IDLE="1")
    proc = subprocess.Popen([*argv, "--port", "0", "--namespace", ns], env=run_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)/metrics", line)
        assert m, (line, proc.stderr.read() if proc.stderr else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=30) as r:
            assert "shmring_metrics_processes" in r.read().decode()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for e in os.listdir("/dev/shm"):
            if e.startswith(f"shmring.{ns}."):
                os.unlink(f"/dev/shm/{e}")


def test_the_readme_commands_are_the_programs_own() -> None:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks, "the README shows its commands in bash blocks"
    mod = metricsd()
    seen = set()
    for block in blocks:
        for line in block.splitlines():
            if not line.startswith("python "):
                continue
            argv = shlex.split(line.split("#", 1)[0])
            if len(argv) >= 2 and argv[0] == "python" and argv[1].endswith("metricsd.py"):
                mod.parse_args(argv[2:])  # SystemExit on a bad command line
                seen.add(argv[2])
    assert {"run", "status"} <= seen, seen
