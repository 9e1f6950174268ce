"""shmring: message passing between processes on one Linux machine through
named POSIX shared memory.

Example::

    import shmring
    ch = shmring.Channel.create("jobs", capacity=1 << 20, pattern="mpmc")
    tx = ch.producer()
    tx.send(b"work")
    rx = shmring.Channel.open("jobs").consumer()
    assert rx.recv(timeout=1) == b"work"
    ch.close(); ch.unlink()
"""

from ._bridge import control as _bridge_control  # noqa: F401  (Channel.open(remote=))
from ._channel.channel import Channel
from ._channel.endpoints import Claim, Consumer, Producer, RecordView
from ._errors import (
    AttachTableFull,
    BridgeUnavailable,
    Broken,
    ClaimRevoked,
    Closed,
    CorruptJournal,
    CorruptRegion,
    DecodeError,
    EndOfStream,
    InsecureListen,
    InvalidArgument,
    KeyFileError,
    KeyFileExists,
    LeaseRevoked,
    MessageTooLarge,
    MissingDependency,
    NoSpace,
    PermissionDenied,
    QueueClosed,
    RegionExists,
    RegionNotFound,
    RemoteError,
    RoleTaken,
    ShmringError,
    SupervisorUnavailable,
    SyncFailed,
    Timeout,
    WouldBlock,
    WriterTaken,
)
from ._journal import Journal
from ._objects.serializers import JSONSerializer, MsgspecSerializer, PickleSerializer, Serializer
from ._objects.view import ObjectView
from ._pipeline.pipeline import Pipeline
from ._pipeline.run import Run
from ._pipeline.stage import Stream
from ._queue.pool import Pool
from ._queue.queue import JoinableQueue, Queue, SimpleQueue
from ._region.region import Region
from ._rpc import Request, Requester, Responder

__version__ = "0.1.0"

__all__ = [
    "AttachTableFull",
    "BridgeUnavailable",
    "Broken",
    "Channel",
    "Claim",
    "ClaimRevoked",
    "Closed",
    "Consumer",
    "CorruptJournal",
    "CorruptRegion",
    "DecodeError",
    "EndOfStream",
    "InsecureListen",
    "InvalidArgument",
    "JSONSerializer",
    "JoinableQueue",
    "Journal",
    "KeyFileError",
    "KeyFileExists",
    "LeaseRevoked",
    "MessageTooLarge",
    "MissingDependency",
    "MsgspecSerializer",
    "NoSpace",
    "ObjectView",
    "PermissionDenied",
    "PickleSerializer",
    "Pipeline",
    "Pool",
    "Producer",
    "Queue",
    "QueueClosed",
    "RecordView",
    "Region",
    "RegionExists",
    "RegionNotFound",
    "RemoteError",
    "Request",
    "Requester",
    "Responder",
    "RoleTaken",
    "Run",
    "Serializer",
    "ShmringError",
    "SimpleQueue",
    "Stream",
    "SupervisorUnavailable",
    "SyncFailed",
    "Timeout",
    "WouldBlock",
    "WriterTaken",
    "__version__",
]
