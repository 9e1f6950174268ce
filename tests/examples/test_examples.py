"""The examples under examples/ are programs; run them as such and check
what they print."""

from __future__ import annotations

import selectors
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 60.0


def read_line(stream: IO[str], timeout: float) -> str:
    """One line from a child's stdout, or AssertionError after timeout."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        assert sel.select(timeout), f"nothing printed in {timeout} s"
    return stream.readline()


def run_example(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("count", [1000, 0])
def test_producer_and_consumer(uname: str, count: int) -> None:
    consumer = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "consumer.py"), "--name", uname, "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout is not None
        assert read_line(consumer.stdout, TIMEOUT) == "ready\n"
        producer = run_example("producer.py", "--name", uname, "--count", str(count))
        assert producer.returncode == 0, producer.stderr
        assert producer.stdout == f"sent {count} messages\n"
        out, err = consumer.communicate(timeout=TIMEOUT)
        assert consumer.returncode == 0, err
        last = count - 1 if count else None
        assert out == f"received {count} messages, last={last}\n"
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(5)


def test_producer_without_consumer(uname: str) -> None:
    producer = run_example("producer.py", "--name", uname, "--count", "3")
    assert producer.returncode == 2
    assert "start the consumer first" in producer.stderr
    assert producer.stdout == ""
