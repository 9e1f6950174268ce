"""The ``shmring`` command meets bad input as a user would type it: run as a
real process, every refusal is one line on stderr with status 2 (argparse's
own, for bad arguments) and every shmring or OS error reaching the top is one
line with a non-zero status: never a traceback. Also ``--version`` and the
help texts a user reads first."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervisor_util import Env, supervisor_env

import shmring

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with supervisor_env(monkeypatch) as e:
        monkeypatch.setenv("SHMRING_SUPERVISOR", "0")
        yield e


def shmring_cmd(*argv: str, cwd: Path | None = None,
                **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m shmring ARGV`` as a user would run ``shmring ARGV``."""
    return subprocess.run([sys.executable, "-m", "shmring", *argv], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env={**os.environ, **env})


def assert_refused(p: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    """One line on stderr, ``shmring: error: ...`` naming ``words``; no traceback."""
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("shmring: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("argv", [
    ["ls", "-n", "bad/ns"],
    ["inspect", "x", "-n", "bad/ns"],
    ["gc", "-n", "bad/ns"],
    ["gc", "--yes", "--namespace", "bad/ns"],
    ["supervisor", "-n", "bad/ns", "--exit-when-idle", "0"],
])
def test_bad_namespace_is_one_line_and_status_2(env: Env, argv: list[str]) -> None:
    assert_refused(shmring_cmd(*argv), 2, "bad namespace 'bad/ns'", "--namespace")


def test_bad_namespace_from_the_environment_is_one_line(env: Env) -> None:
    for argv in (["inspect", "x"], ["supervisor", "--exit-when-idle", "0"]):
        assert_refused(shmring_cmd(*argv, SHMRING_NAMESPACE="a b"), 2, "bad namespace 'a b'")


def test_bad_region_name_is_refused(env: Env) -> None:
    assert_refused(shmring_cmd("inspect", "../etc"), 2, "bad region name")


@pytest.mark.parametrize(("argv", "words"), [
    (["demo", "--count", "-5"], ["--count", "'-5'", "at least 1"]),
    (["demo", "--count", "0"], ["--count", "at least 1"]),
    (["demo", "--count", "many"], ["--count", "not a whole number"]),
    (["supervisor", "--claim-timeout", "-3"], ["--claim-timeout", "'-3'"]),
    (["supervisor", "--claim-timeout", "nan"], ["--claim-timeout"]),
    (["supervisor", "--exit-when-idle", "-1"], ["--exit-when-idle"]),
    (["supervisor", "--startup-grace", "soon"], ["--startup-grace"]),
    (["supervisor", "--log-level", "loud"], ["--log-level", "'LOUD'"]),
])
def test_numbers_are_validated(env: Env, argv: list[str], words: list[str]) -> None:
    p = shmring_cmd(*argv)
    assert_refused(p, 2, *words)
    assert p.stdout == ""  # refused before anything ran


def test_bad_claim_timeout_from_the_environment_is_refused_only_by_the_supervisor(
        env: Env) -> None:
    p = shmring_cmd("supervisor", "--exit-when-idle", "0", SHMRING_CLAIM_TIMEOUT="soon")
    assert_refused(p, 2, "--claim-timeout", "$SHMRING_CLAIM_TIMEOUT")
    p = shmring_cmd("ls", "-n", env.namespace, SHMRING_CLAIM_TIMEOUT="soon")
    assert p.returncode == 0, p.stderr


def test_an_os_error_at_the_top_is_one_line(env: Env, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    p = shmring_cmd("supervisor", "--socket-dir", str(missing), "--exit-when-idle", "0",
                    "--log-file", str(tmp_path / "log"))
    assert_refused(p, 1, str(missing))


def test_version() -> None:
    p = shmring_cmd("--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"shmring {shmring.__version__}"


def test_help_is_for_users() -> None:
    p = shmring_cmd("--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: shmring ")
    assert "shared memory" in p.stdout and "--version" in p.stdout
    for command in ("demo", "ls", "inspect", "gc", "supervisor", "bench"):
        assert command in p.stdout
    assert "Each subcommand is a function" not in p.stdout  # the developers' docstring
    assert "``" not in p.stdout


def test_bench_help_names_the_command_and_is_plain_text() -> None:
    p = shmring_cmd("bench", "--help", cwd=ROOT)  # the benchmarks run from a checkout
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: shmring bench ")
    assert "python -m benchmarks" not in p.stdout
    assert "``" not in p.stdout and "--quick" in p.stdout


def test_bench_refusal_is_one_line() -> None:
    assert_refused(shmring_cmd("bench", "--repeats", "0", cwd=ROOT), 2, "--repeats")


def test_a_reader_that_left_is_not_an_error_to_report(env: Env) -> None:
    """``shmring ls | head``: when the reader has gone, the command stops
    without a word (no BrokenPipeError traceback)."""
    read, write = os.pipe()
    os.close(read)  # the reader leaves before the command writes a byte
    try:
        p = subprocess.run([sys.executable, "-m", "shmring", "ls", "-n", env.namespace],
                           stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert p.returncode == 1
    assert p.stderr == ""
