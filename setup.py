"""Build of the one compiled piece, shmring._core (C11; links zlib, for the journal's CRC32).

The sources are in layers (src/shmring/csrc/): ring/ is pure C, value/ the
value record format, journal/ the journal's record format and CRC32, py/ the
CPython glue; layout.h, atomics.h, wait.* and guard.* underneath. Files
include one another by their path from csrc/.
"""

from setuptools import Extension, setup

CSRC = "src/shmring/csrc/"

SOURCES = [
    "wait.c",
    "guard.c",
    "ring/ring.c",
    "ring/produce.c",
    "ring/consume.c",
    "ring/recover.c",
    "ring/revoke.c",
    "ring/link.c",
    "ring/lease.c",
    "ring/slots.c",
    "ring/untether.c",
    "ring/ahead.c",
    "ring/feed.c",
    "value/encode.c",
    "value/decode.c",
    "journal/crc.c",
    "journal/record.c",
    "py/module.c",
    "py/endpoint.c",
    "py/producer.c",
    "py/consumer.c",
    "py/objects.c",
    "py/buffers.c",
    "py/lock.c",
    "py/queue.c",
    "py/link.c",
    "py/link_map.c",
    "py/pipe_batch.c",
    "py/ahead.c",
    "py/journal.c",
    "py/fed.c",
]
HEADERS = [
    "layout.h",
    "atomics.h",
    "wait.h",
    "guard.h",
    "ring/ring.h",
    "ring/record.h",
    "ring/internal.h",
    "value/value.h",
    "value/format.h",
    "journal/crc.h",
    "journal/record.h",
    "py/core.h",
    "py/objects.h",
    "py/lock.h",
    "py/link.h",
    "py/pipe_batch.h",
    "py/ahead.h",
]

setup(
    ext_modules=[
        Extension(
            "shmring._core",
            sources=[CSRC + name for name in SOURCES],
            depends=[CSRC + h for h in HEADERS],
            include_dirs=[CSRC],
            libraries=["z"],  # zlib: the journal's CRC32, the same as Python's zlib.crc32
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
        )
    ]
)
