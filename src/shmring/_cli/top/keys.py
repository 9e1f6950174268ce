"""Keys typed while ``shmring top`` runs: stdin in cbreak mode (each key
arrives at once, unechoed; Ctrl-C still sends SIGINT), read with ``select``
between frames, so waiting for the next frame and for a key are one wait.
The terminal's mode is restored on exit, whatever ends the program. When
stdin is not a terminal there are no keys: the wait is a plain sleep."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from typing import Any, TextIO

#: The keys that quit.
QUIT = frozenset("qQ")


class Keys:
    """A context manager: ``keys.wait(seconds)`` returns the keys typed
    meanwhile (as soon as one is typed), or ``""`` when the time is up."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdin
        self.fd = -1
        self._saved: list[Any] | None = None

    @property
    def active(self) -> bool:
        """True when keys are read (stdin is a terminal)."""
        return self._saved is not None

    def __enter__(self) -> Keys:
        try:
            fd = self.stream.fileno()
        except (AttributeError, ValueError, OSError):
            return self
        if not os.isatty(fd):
            return self
        self.fd = fd
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            with contextlib.suppress(OSError):  # a terminal that hung up keeps no mode
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def wait(self, seconds: float) -> str:
        """Wait up to ``seconds`` for keys; the keys typed, or ``""``."""
        if self._saved is None:
            time.sleep(max(0.0, seconds))
            return ""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, seconds))
        if not ready:
            return ""
        try:
            data = os.read(self.fd, 64)
        except OSError:  # EIO: the terminal is gone
            data = b""
        if not data:  # the terminal hung up: nothing more will be typed
            self.__exit__()
            return ""
        return data.decode(errors="replace")
