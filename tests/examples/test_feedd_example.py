"""examples/feedd as its README and its systemd unit say: the unit parsed,
installed with its own ``sed`` line for this test's venv and its
``ExecStart`` run until SIGTERM; ``status --json`` with and without a
publisher; every command of the README accepted by the program it runs; and
the README's own subscriber (a shell heredoc) run against a live feedd."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from feed_util import EXAMPLE, ROOT, Program, feedd, namespace_env, programs, status, subscribe
from namespace_util import wait_for
from test_systemd_unit import URI_SCHEMES, exec_start, parse_unit

UNIT = EXAMPLE / "shmring-feedd.service"
README = EXAMPLE / "README.md"
STARTED = re.compile(r"feedd: started 'ticks' at seq 0 \(generation 1, pid (\d+)")


@pytest.fixture
def fenv() -> Iterator[dict[str, str]]:
    """A namespace of this test's own; nothing of it may be left at the end."""
    with namespace_env() as env:
        yield env


def sed_line() -> str:
    """The install command of the unit's comment."""
    (sed,) = [ln.lstrip("#").strip() for ln in UNIT.read_text().splitlines()
              if ln.lstrip("#").strip().startswith("sed ")]
    return sed


def install(tmp: Path) -> Path:
    """Run the unit comment's ``sed`` line from the checkout, as a user with
    this test's venv active would, into a temporary home."""
    home = tmp / "home"
    (home / ".config" / "systemd" / "user").mkdir(parents=True)
    env = dict(os.environ, HOME=str(home), VIRTUAL_ENV=sys.prefix, PWD=str(ROOT))
    subprocess.run(["sh", "-c", sed_line()], cwd=ROOT, env=env, check=True, timeout=30)
    return home / ".config" / "systemd" / "user" / UNIT.name


def bash_blocks() -> list[str]:
    """The ```bash blocks of the README."""
    return re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.S | re.M)


def test_the_unit_has_what_systemd_and_a_reader_need() -> None:
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    assert unit["Unit"]["Description"]
    (docs,) = unit["Unit"]["Documentation"]
    uris = docs.split()
    assert uris and all(u.startswith(URI_SCHEMES) for u in uris), uris
    assert any(u.endswith("/examples/feedd/README.md") for u in uris)
    assert unit["Service"]["Type"] == ["simple"]
    assert unit["Service"]["KillSignal"] == ["SIGTERM"]
    assert unit["Service"]["Restart"] == ["on-failure"]
    assert unit["Install"]["WantedBy"] == ["default.target"]


def test_the_unit_runs_feedd_with_arguments_it_accepts() -> None:
    argv = exec_start(parse_unit(UNIT.read_text()))
    # The venv's own interpreter, never the system Python (it has no shmring).
    assert argv[:2] == ["%h/.venv/bin/python", "%h/shmring/examples/feedd/feedd.py"], argv
    args = feedd.parser().parse_args(argv[2:])
    assert (args.command, args.name, args.rate, args.keys, args.until) == (
        "run", "ticks", 1000.0, 100, None)


def test_the_readme_installs_it_with_the_same_command() -> None:
    assert any(sed_line() in block for block in bash_blocks())


def test_every_readme_command_is_accepted() -> None:
    """Each ``python examples/feedd/X.py ...`` line of the README parses
    with X's own parser (argparse exits on anything it does not accept)."""
    parsers = {"feedd.py": feedd.parser(), "subscribe.py": subscribe.parser()}
    seen = set()
    for block in bash_blocks():
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if len(words) >= 2 and words[0] == "python" and words[1].startswith(
                    "examples/feedd/"):
                script = Path(words[1]).name
                parsers[script].parse_args(words[2:])
                seen.add((script, *words[2:3]))
    assert {("feedd.py", "run"), ("feedd.py", "status"), ("subscribe.py", "--lossy")} <= seen


def test_status_json_without_a_feed(fenv: dict[str, str]) -> None:
    st = status(fenv)
    assert st == {"name": "ticks", "running": False, "pid": None, "seq": None, "keys": None,
                  "generation": None, "subscribers": [], "rc": 1}


def test_installed_for_this_venv_it_runs_feedd_until_sigterm(
        fenv: dict[str, str], tmp_path: Path) -> None:
    installed = install(tmp_path)
    text = installed.read_text()
    assert "%h" not in text.split("[Unit]", 1)[1]
    argv = exec_start(parse_unit(text))
    assert argv[0] == os.path.join(sys.prefix, "bin", "python")
    assert argv[1] == str(EXAMPLE / "feedd.py") and Path(argv[1]).exists()
    with programs() as progs:
        pub = Program(fenv, None, *argv)
        progs.append(pub)
        m = STARTED.match(pub.line())
        assert m and int(m.group(1)) == pub.pid
        st = wait_for("ticks", lambda: (got := status(fenv))["seq"] and got)
        assert st["running"] and st["pid"] == pub.pid and st["rc"] == 0
        assert st["generation"] == 1 and 0 < st["keys"] <= 100
        # The README's own subscriber, run from the checkout with this venv
        # active, as it says.
        (heredoc,) = [b for b in bash_blocks() if "<<'EOF'" in b]
        active = dict(fenv, PATH=f"{Path(sys.executable).parent}:{fenv['PATH']}")
        done = subprocess.run(["bash", "-c", heredoc], cwd=ROOT, env=active,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        first, *rest = done.stdout.splitlines()
        m = re.fullmatch(r"state at seq (\d+) : (\d+) keys", first)
        assert m, first
        seqs = [int(ln.split()[0]) for ln in rest]
        assert seqs == list(range(int(m.group(1)) + 1, int(m.group(1)) + 6)), rest
        assert all(ln.endswith("missed before it: 0") for ln in rest), rest
        pub.signal(signal.SIGTERM)
        _rc, out = pub.finish()
        assert out.startswith("feedd: stopped at seq "), out


def test_status_json_is_printed_by_the_command(fenv: dict[str, str]) -> None:
    """The JSON of ``status --json`` is the dict feedd.status computes."""
    with programs() as progs:
        pub = Program(fenv, EXAMPLE / "feedd.py", "run", "--rate", "200", "--keys", "5")
        progs.append(pub)
        assert STARTED.match(pub.line())
        done = subprocess.run([sys.executable, str(EXAMPLE / "feedd.py"), "status", "--json"],
                              env=fenv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        st = json.loads(done.stdout)
        assert set(st) == {"name", "running", "pid", "seq", "sent_seq", "keys", "generation",
                           "subscribers"}
        assert st["running"] and st["pid"] == pub.pid
        human = subprocess.run([sys.executable, str(EXAMPLE / "feedd.py"), "status"],
                               env=fenv, capture_output=True, text=True, timeout=30)
        assert human.returncode == 0
        assert human.stdout.startswith(f"feed 'ticks': publisher pid {pub.pid}, seq ")
        pub.stop()
