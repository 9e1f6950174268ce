"""A region whose header is overwritten after the supervisor tracked it (its
slot count, here): the supervisor says so once, never walks its table again,
and keeps judging it by its registered clients; the deaths of the processes
that held it no longer log a traceback each (issue 18, item 4).

Real processes: an auto-started supervisor logging to its file, children
that hold the channel and are SIGKILLed one by one after the corruption.
"""

from __future__ import annotations

import os
import struct

from supervisor_util import Child, Env, sleep_forever, wait_for

import shmring
from shmring import _layout as L


def test_a_corrupt_header_is_logged_once_and_judged_by_holders(env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc")

    def holder(c: Child) -> None:
        other = shmring.Channel.open(uname)
        other.consumer()
        c.signal()
        sleep_forever()

    kids = [Child(holder) for _ in range(3)]
    for k in kids:
        k.ready()
    buf = ch.region.buf
    assert buf is not None
    good = struct.unpack_from("<I", buf, L.HDR_SLOT_COUNT)[0]
    struct.pack_into("<I", buf, L.HDR_SLOT_COUNT, 999_999)  # overwritten under everyone
    for k in kids:
        k.kill()  # each death used to walk the table: a traceback per event
    path = env.shm(uname)
    assert os.path.exists(path)  # the parent is registered: it keeps the region
    struct.pack_into("<I", buf, L.HDR_SLOT_COUNT, good)  # so that our own close can walk it
    ch.close()
    wait_for(lambda: not os.path.exists(path), 10, "the region to go with its last holder")
    env.wait_no_supervisor()
    with open(os.path.join(env.socket_dir, f"{env.namespace}.log")) as f:
        log = f.read()
    assert log.count("is not read again") == 1, log
    assert "Traceback" not in log and " ERROR " not in log, log
