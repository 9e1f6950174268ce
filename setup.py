"""Build of the one compiled piece, shmring._core (C11, no other native dependency)."""

from setuptools import Extension, setup

CSRC = "src/shmring/csrc/"

setup(
    ext_modules=[
        Extension(
            "shmring._core",
            sources=[
                CSRC + name
                for name in ("module.c", "endpoint.c", "producer.c", "consumer.c", "ring.c", "wait.c",
                             "codec.c", "queue.c")
            ],
            depends=[CSRC + h for h in ("layout.h", "atomics.h", "ring.h", "wait.h", "core.h",
                                              "codec.h")],
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
        )
    ]
)
