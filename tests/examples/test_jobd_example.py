"""examples/jobd as its README shows it: the commands of its how-to print
what it says, ``status --json`` parses, jobd stops cleanly on SIGTERM and
Ctrl-C, bad arguments are refused; and its systemd unit parses, installs
for this venv as its comment says, and its ``ExecStart`` serves until
SIGTERM."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from jobd_util import JOBD, Jobs, fresh_jobs, read_line
from test_systemd_unit import exec_start, parse_unit

import shmring

ROOT = JOBD.parents[1]
UNIT = JOBD / "shmring-jobd.service"
README = JOBD / "README.md"


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    """jobd's processes of this test, in a namespace of its own."""
    yield from fresh_jobs()


def _jobd_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jobd_example", JOBD / "jobd.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look themselves up there
    spec.loader.exec_module(mod)
    return mod


def _run(jobs: Jobs, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(JOBD / script), *args], env=jobs.env,
                          capture_output=True, text=True, timeout=60)


def _sed_line() -> str:
    (sed,) = [ln.lstrip("#").strip() for ln in UNIT.read_text().splitlines()
              if ln.lstrip("#").strip().startswith("sed ")]
    return sed


# ------------------------------------------------------------ the programs --
def test_the_readme_how_to_prints_what_it_says(jobs: Jobs) -> None:
    jobs.jobd("--max-tries", "3")
    for _ in range(3):
        jobs.worker()
    jobs.workers(3)
    done = _run(jobs, "client.py", "square", "1", "2", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "square(1) = 1\nsquare(2) = 4\nsquare(3) = 9\n"
    assert "square(1) = 1\n" in "\n".join(ln.lstrip("# ") for ln in README.read_text()
                                          .splitlines())
    done = _run(jobs, "client.py", "fail", "oops")
    assert done.returncode == 1
    assert "fail('oops') failed: job 1 of jobd.reply." in done.stdout
    assert "ValueError: asked to fail: 'oops'" in done.stdout
    done = _run(jobs, "client.py", "crash", "0")
    assert done.returncode == 1
    assert "killed every worker it was given to" in done.stdout
    assert "moved to the dead letters after 3 tries" in done.stdout
    text = _run(jobs, "jobd.py", "status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("jobd pid ") and "max tries 3" in lines[0]
    assert lines[1].startswith("workers: 0 (0 busy)  queued: 0  in flight: 0  done: 3  "
                               "failed: 1  retried: 2  dead letters: 1"), lines
    assert "{'task': 'crash', 'arg': 0}, 3 tries" in lines[2]


def test_status_json_parses(jobs: Jobs) -> None:
    server = jobs.jobd()
    jobs.worker()
    jobs.workers(1)
    assert _run(jobs, "client.py", "square", "5").returncode == 0
    done = _run(jobs, "jobd.py", "status", "--json")
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert st["pid"] == server.pid and st["service"] == "jobd" and st["max_tries"] == 3
    assert [(w["busy"], w["done"]) for w in st["workers"]] == [(False, 1)]
    assert (st["queued"], st["in_flight"], st["done"], st["dead_letters"]) == (0, 0, 1, [])
    assert st["requests"]["received"] >= 2


def test_status_without_jobd_says_so(jobs: Jobs) -> None:
    done = _run(jobs, "jobd.py", "status", "--timeout", "0.5")
    assert done.returncode == 1 and done.stdout == ""
    assert "jobd is not answering" in done.stderr and "no server is attached" in done.stderr


def test_a_client_that_waits_too_long_says_why(jobs: Jobs) -> None:
    done = _run(jobs, "client.py", "--timeout", "0.5", "square", "2")
    assert done.returncode == 1
    assert "square(2) failed: no reply from service 'jobd'" in done.stdout
    assert "no server is attached" in done.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_jobd_stops_cleanly_and_fails_what_it_queued(jobs: Jobs, sig: signal.Signals) -> None:
    server = jobs.jobd()
    client = jobs.client()
    queued = client.submit({"op": "submit", "job": {"task": "square", "arg": 3}})
    jobs.wait_for("a queued job", lambda st: st["queued"] == 1)
    server.send_signal(sig)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert out.endswith("jobd: stopped\n")
    with pytest.raises(shmring.RemoteError,
                       match="jobd stopped before job 1 was given to a worker"):
        client.result(queued, timeout=10)


def test_bad_arguments_are_refused(jobs: Jobs) -> None:
    done = _run(jobs, "jobd.py", "run", "--max-tries", "0")
    assert done.returncode == 2 and "--max-tries must be at least 1" in done.stderr
    done = _run(jobs, "jobd.py", "serve")
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_a_worker_stopped_with_sigterm_says_bye(jobs: Jobs) -> None:
    jobs.jobd()
    w = jobs.start("worker.py")
    jobs.workers(1)
    assert w.stdout is not None
    assert "ready, inbox jobd.worker." in read_line(w.stdout, 30)
    w.send_signal(signal.SIGTERM)
    out, err = w.communicate(timeout=30)
    assert w.returncode == 0, err
    assert out.endswith("stopped after 0 jobs\n")
    jobs.workers(0)


# ----------------------------------------------------------- the systemd unit --
def test_the_unit_has_what_systemd_and_a_reader_need() -> None:
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    assert unit["Unit"]["Description"]
    (docs,) = unit["Unit"]["Documentation"]
    assert "file:%h/shmring/examples/jobd/README.md" in docs.split()
    assert unit["Service"]["Type"] == ["simple"]
    assert unit["Service"]["KillSignal"] == ["SIGTERM"]
    assert unit["Service"]["Restart"] == ["on-failure"]
    assert unit["Install"]["WantedBy"] == ["default.target"]


def test_exec_start_is_a_command_jobd_accepts() -> None:
    argv = exec_start(parse_unit(UNIT.read_text()))
    assert argv[:2] == ["%h/.venv/bin/python", "%h/shmring/examples/jobd/jobd.py"], argv
    p = _jobd_module().parser()
    p.exit_on_error = False
    args: argparse.Namespace = p.parse_args(argv[2:])
    assert (args.command, args.max_tries, args.name, args.namespace) == ("run", 3, "jobd", None)


def test_readme_installs_it_with_the_same_command() -> None:
    assert _sed_line() in README.read_text()


def test_installed_for_this_venv_it_serves_until_sigterm(jobs: Jobs, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "systemd" / "user").mkdir(parents=True)
    env = dict(os.environ, HOME=str(home), VIRTUAL_ENV=sys.prefix, PWD=str(ROOT))
    subprocess.run(["sh", "-c", _sed_line()], cwd=ROOT, env=env, check=True, timeout=30)
    installed = home / ".config" / "systemd" / "user" / UNIT.name
    unit = parse_unit(installed.read_text())
    argv = exec_start(unit)
    assert argv[0] == os.path.join(sys.prefix, "bin", "python") and Path(argv[0]).exists()
    assert argv[1] == str(JOBD / "jobd.py")
    assert "%h" not in installed.read_text().split("[Unit]", 1)[1]
    # The unit's command as systemd would run it, in this test's namespace.
    proc = subprocess.Popen(argv, env=jobs.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    jobs.procs.append(proc)
    assert proc.stdout is not None
    assert read_line(proc.stdout, 30) == f"jobd: serving 'jobd' (pid {proc.pid}, max tries 3)\n"
    assert jobs.status()["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == "jobd: stopped\n"


def test_the_readme_python_block_runs_from_the_checkout() -> None:
    """The README's Python client (a fragment for test_docs.py: it starts the
    programs of a checkout) runs as written from the top of this one."""
    from doc_blocks import ROOT as TOP
    from doc_blocks import markdown_blocks

    (block,) = markdown_blocks(TOP / "examples" / "jobd" / "README.md")
    assert block.fragment and "checkout" in block.fragment
    ns = f"jobd-readme-{os.getpid()}"
    r = subprocess.run([sys.executable, "-c", block.source], cwd=TOP, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, SHMRING_NAMESPACE=ns))
    assert r.returncode == 0, r.stderr
    assert "failed, as it should:" in r.stdout and "jobs done" in r.stdout, r.stdout

