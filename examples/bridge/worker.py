"""A worker of examples/bridge: takes jobs from host b's ``jobs`` channel,
checks each answer, and prints how many it did once the producer has ended
the stream. With ``--remote URL`` it runs on host a: ``Channel.open(remote=
...)`` starts this host's bridge if none runs and imports the channel into a
local ring of the same name; without it, on host b, beside the producer."""

from __future__ import annotations

import argparse

import shmring


def main() -> None:
    """Take jobs until the end of the stream; print a summary line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--remote", help="host b's bridge, e.g. tcp://hostb:7470 (without it: the "
                                    "local channel, a worker on host b itself)")
    args = p.parse_args()
    ch = shmring.Channel.open("jobs", remote=args.remote, wait=30)
    rx = ch.consumer()
    done, ids = 0, set()
    while True:
        try:
            job = rx.recv_obj(timeout=60)
        except shmring.EndOfStream:
            break
        assert job["n"] ** 2 == job["square"], job
        ids.add(job["id"])
        done += 1
    print(f"worker did {done} jobs, {len(ids)} distinct, id sum {sum(ids)}", flush=True)
    rx.close()
    if args.remote:
        ch.unlink()  # the stream is over: remove the imported ring (it is persistent)
    ch.close()


if __name__ == "__main__":
    main()
