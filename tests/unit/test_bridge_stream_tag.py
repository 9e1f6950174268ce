"""The tag of an exported broadcast stream's durable subscription, and the
``--hold`` option: the same tag in every process for the same (importing
bridge, channel), a different one otherwise; a hold is finite and >= 0."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from shmring._bridge.daemon import Config
from shmring._bridge.outbound import HOLD, stream_tag
from shmring._cli import bridge as cli


def test_stream_tag_is_stable_across_processes() -> None:
    here = stream_tag("hosta/default", "jobs")
    there = subprocess.run(
        [sys.executable, "-c", "from shmring._bridge.outbound import stream_tag; "
         "print(stream_tag('hosta/default', 'jobs'))"],
        check=True, capture_output=True, text=True, timeout=60).stdout
    assert int(there) == here
    assert 0 <= here < 1 << 64


def test_stream_tags_tell_peers_and_channels_apart() -> None:
    tags = {stream_tag(p, c) for p in ("a", "b", "a/x", "") for c in ("jobs", "x", "a")}
    assert len(tags) == 12
    assert stream_tag("a\0b", "c") != stream_tag("a", "b\0c")


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(list(argv))


def test_hold_option() -> None:
    assert _parse().hold == HOLD == Config().hold == 60.0
    assert _parse("--hold", "2.5").hold == 2.5
    assert _parse("--hold", "0").hold == 0.0


@pytest.mark.parametrize("bad", ["-1", "forever", "x", "nan"])
def test_bad_hold_is_refused(bad: str) -> None:
    with pytest.raises(SystemExit):
        _parse("--hold", bad)
