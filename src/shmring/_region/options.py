"""Options of a region's header checked at creation: a lossless broadcast
ring's ``slow_consumer_timeout`` and an mpmc ring's ``lease``, turned into
the words the header stores (HDR_UNTETHER_NS, HDR_LEASE_MS)."""

from __future__ import annotations

from .. import _layout as L
from .._errors import InvalidArgument


def untether_timeout_ns(timeout: float | None, pattern: str, lossy: bool) -> int:
    """``slow_consumer_timeout`` in whole nanoseconds for the header (0:
    never); InvalidArgument unless None or a finite number of seconds >= 0
    on a lossless broadcast ring."""
    if timeout is None or (not isinstance(timeout, bool) and timeout == 0):
        return 0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
        0 < timeout < 1e9
    ):
        raise InvalidArgument(
            f"slow_consumer_timeout {timeout!r} must be None (never) or seconds > 0 "
            "and below 1e9"
        )
    if pattern != "broadcast" or lossy:
        raise InvalidArgument(
            "slow_consumer_timeout applies to lossless broadcast only (a lossy "
            "producer never waits; other patterns have one consumer per message)"
        )
    return max(1, round(timeout * 1e9))


def lease_millis(lease: object, pattern: str) -> int:
    """``Channel.create``'s ``lease`` as the header stores it (HDR_LEASE_MS):
    0 for the supervisor's default, LEASE_NEVER for never, else milliseconds
    (at least 1)."""
    if lease == "supervisor" or (pattern != "mpmc" and lease in (None, 0)):
        return 0
    if pattern != "mpmc":
        raise InvalidArgument(f"lease applies to the mpmc pattern only, not {pattern!r}")
    if lease is None or (isinstance(lease, (int, float)) and not isinstance(lease, bool)
                         and lease == 0):
        return L.LEASE_NEVER
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not (
            0 < lease < 1e9):
        raise InvalidArgument(f"lease {lease!r} must be a number of seconds > 0, 0 or None "
                              "(never), or 'supervisor' (its --lease-timeout)")
    return max(1, round(lease * 1000))


def check_lease_ms(lease_ms: object, pattern: str) -> None:
    """``Region.create``'s ``lease_ms``: InvalidArgument unless whole
    milliseconds from 0 to LEASE_NEVER, and 0 unless the ring is mpmc."""
    if isinstance(lease_ms, bool) or not isinstance(lease_ms, int) or not (
            0 <= lease_ms <= L.LEASE_NEVER) or (lease_ms and pattern != "mpmc"):
        raise InvalidArgument(f"lease_ms {lease_ms!r}: a lease applies to mpmc only, "
                              "in milliseconds")
