"""Logging through a channel: :class:`Handler` in any number of processes,
:class:`Sink` in one daemon that writes their records.

Why it is built this way:

- **The ring is the buffer, and it outlives the application.** ``emit``
  copies one encoded record into an mpsc channel that the sink created
  ``persistent=True``. Once ``emit`` returns the record is in shared memory:
  a SIGKILL of the application right after cannot lose it, and neither can
  one of the sink (a restarted sink re-opens the same region and writes what
  it had not read). The supervisor never unlinks a persistent region, so
  nobody has to keep it open for the records to survive.
- **emit never waits longer than ``timeout``.** It first reads one word, the
  ring's consumer owner: no sink there (it exited, or the supervisor freed the
  role of a killed one), and the record is dropped and counted at once. A
  live but slow sink (ring full) costs at most ``timeout``, after which emits
  for the next ``retry`` seconds only try without waiting. A missing channel is
  looked for again at most every ``retry`` seconds (one ``stat`` then, no
  system call in between).
- **Drops are counted exactly and reported in band.** ``handler.dropped``
  counts every record ``emit`` did not put in the ring; the next record that
  does get in carries the count not yet reported, and the sink logs
  ``"N records dropped by pid P"`` before it. A handler closed with drops
  still unreported sends a note with the count alone.
- **No pickle.** A record travels as a plain tuple (the formatted message,
  level, logger name, times, pid, process and thread names, source location,
  ``exc_text``, ``stack_info``) through the value codec, and the sink decodes
  it with the value decoder only, which never runs code: arbitrary ``args``
  are never sent, ``getMessage()`` is.
- **At least once at the sink.** The sink reads each record in place, hands it
  to its handlers (which write and flush it) and only then releases it. A
  sink killed between the two writes that one record again after its restart.

Rejected: pickling records as ``QueueHandler`` does (the sink would run
code the sender chose); checking for a live consumer in the attach table on
every emit (``Channel.consumers`` walks every slot and reads ``/proc``: tens
of microseconds); a region per application (the sink would have to find
them). Open: records left in the ring when the sink dies wait for the next
sink; if none ever starts on that channel they are neither written nor
counted as dropped.

The sink's counters (records written, drops reported) live in a small
region of their own, ``<channel>.sink``, which lives as long as the sink:
:func:`sink_status` reads them from shared memory.

Example (the sink usually runs as ``examples/logsink/logsinkd.py``)::

    import logging
    import shmring.logging

    sink = shmring.logging.Sink("app-logs", handlers=[logging.StreamHandler()])
    log = logging.getLogger("app")
    log.addHandler(shmring.logging.Handler("app-logs"))
    log.warning("disk %d%% full", 91)
    sink.drain(timeout=1)         # prints: disk 91% full
    sink.close(); sink.unlink()
"""

from .handler import Handler
from .record import DEFAULT_CHANNEL, decode_record, encode_record
from .sink import Sink, sink_status

__all__ = ["DEFAULT_CHANNEL", "Handler", "Sink", "decode_record", "encode_record", "sink_status"]
