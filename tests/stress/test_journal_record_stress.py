"""The long run of ``shmring record`` under SIGKILL (``-m stress``): round
after round with a new seed, a producer process sends a stream on spsc or
mpsc while the recorder is SIGKILLed at random moments (after 0-150 ms of
recording, several times a round) and started again on the same journal,
until the stream ends. Each round's journal must hold the whole stream in
order, each message whole, with at most one duplicate per kill, each right
where that kill was. Rounds run until a time budget (``SHMRING_STORM_BUDGET``
seconds, 90 by default) is spent.
"""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path

import pytest
from journal_cli_util import journal_records, msg, namespace_env, procs, producer, recorder

COUNT = 20_000


@pytest.mark.stress
@pytest.mark.parametrize("pattern", ["spsc", "mpsc"])
def test_recorder_sigkill_storm(uname: str, tmp_path: Path, pattern: str) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90"))
    end = time.monotonic() + budget
    seed = 0
    while time.monotonic() < end:
        seed += 1
        rng = random.Random(seed)
        journal, hold = tmp_path / f"j{seed}", tmp_path / f"done{seed}"
        kills = 0
        with namespace_env() as env, procs() as ps:
            # The producer keeps the channel until the test is done: with
            # the recorder dead and the producer gone, the channel (and what
            # the producer left in it) would be removed.
            ps.append(prod := producer(env, f"{uname}-{seed}", pattern, COUNT, hold=hold))
            while True:
                ps.append(rec := recorder(env, f"{uname}-{seed}", journal, "--sync", "none"))
                time.sleep(rng.uniform(0, 0.15))
                if rec.proc.poll() is not None or kills >= 8:
                    rec.finish()  # the stream ended while it ran
                    break
                rec.kill()
                kills += 1
            hold.touch()
            prod.finish()
        got = [d for _, d in journal_records(journal)]
        numbers = [struct.unpack_from("<I", d)[0] for d in got]
        assert sorted(set(numbers)) == list(range(COUNT)), (seed, kills)
        assert len(numbers) - COUNT <= kills, (seed, kills, len(numbers))
        assert numbers == sorted(numbers), seed  # in order; a duplicate sits by its twin
        assert got == [msg(i) for i in numbers], seed
