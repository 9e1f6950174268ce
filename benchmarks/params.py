"""Run parameters: message sizes, durations and watchdog deadlines."""

from __future__ import annotations

from dataclasses import dataclass

SMALL = 64
LARGE = 1 << 20
ARRAY_BYTES = 8 << 20
BATCH = 64
FAN = 4


@dataclass(frozen=True)
class Params:
    """How long and how often each measurement runs."""

    quick: bool
    repeats: int
    duration: float  # seconds a producer sends (or a pinger pings)
    idle_seconds: float  # seconds a consumer blocks on an empty channel
    deadline: float  # watchdog: children are killed after this many seconds

    @classmethod
    def make(cls, quick: bool, repeats: int | None) -> Params:
        """Defaults for a full run (~1 s per measurement) or a --quick one."""
        if quick:
            return cls(True, repeats or 1, duration=0.2, idle_seconds=1.0, deadline=10.0)
        return cls(False, repeats or 3, duration=1.0, idle_seconds=5.0, deadline=30.0)
