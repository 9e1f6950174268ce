"""The bridge's optional dependency: pyzmq (``pip install 'shmring[bridge]'``)."""

from __future__ import annotations

from typing import Any

from .._errors import MissingDependency


def zmq_module() -> Any:
    """The ``zmq`` module, or :class:`MissingDependency` naming the extra."""
    try:
        import zmq
    except ImportError:
        raise MissingDependency(
            "the bridge needs pyzmq: pip install 'shmring[bridge]' (or pip install pyzmq)"
        ) from None
    return zmq
