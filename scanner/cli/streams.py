"""stdout and stderr that cannot break a command.

A scan's result is the history database, not the terminal: when stderr is closed
(`scan 2>&1 | head -1`), full or otherwise failing, what is written to it is dropped and
the scan goes on. stdout carries results a command was asked for (`report --out -`,
`history`): a failure there stops the command with one clean line (`OutputError`, exit 4)
instead of a traceback. Either way the failed descriptor is pointed at the null device,
so the interpreter's final flush stays silent.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any

from scanner.errors import OutputError


def _silence(stream: Any) -> None:
    """Point the stream's file descriptor at the null device."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


class _Binary:
    """The `.buffer` of a guarded stream."""

    def __init__(self, owner: GuardedStream) -> None:
        self._owner = owner

    def write(self, data: bytes) -> int:
        return self._owner._call(lambda: self._owner._inner.buffer.write(data), len(data))

    def flush(self) -> None:
        if self._owner.broken is None:
            self._owner._call(self._owner._inner.buffer.flush, 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner._inner.buffer, name)


class GuardedStream(io.TextIOBase):
    """A text stream wrapper: failures are dropped (stderr) or raised as OutputError (stdout)."""

    def __init__(self, inner: Any, name: str, *, tolerant: bool) -> None:
        super().__init__()
        self._inner: Any = inner
        self._name = name
        self._tolerant = tolerant
        self.broken: str | None = None  # why writing failed, once it has

    def _call(self, action: Any, result: int) -> int:
        if self.broken is not None:
            if self._tolerant:
                return result
            raise OutputError(f"cannot write to {self._name}: {self.broken}")
        try:
            action()
        except (OSError, ValueError) as exc:
            self.broken = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            _silence(self._inner)
            if not self._tolerant:
                raise OutputError(f"cannot write to {self._name}: {self.broken}") from None
        return result

    def write(self, text: str) -> int:
        return self._call(lambda: self._inner.write(text), len(text))

    def flush(self) -> None:
        if self.broken is None:  # once broken, the error was raised by the write that found it
            self._call(self._inner.flush, 0)

    @property
    def buffer(self) -> _Binary:
        return _Binary(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(self._inner.encoding)

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        errors = self._inner.errors
        return None if errors is None else str(errors)

    def isatty(self) -> bool:
        try:
            return self.broken is None and self._inner.isatty()
        except ValueError:
            return False

    def fileno(self) -> int:
        return int(self._inner.fileno())

    def writable(self) -> bool:
        return True


def guard_standard_streams() -> None:
    """Replace sys.stdout and sys.stderr by guarded wrappers (once per process)."""
    if not isinstance(sys.stderr, GuardedStream) and sys.stderr is not None:
        sys.stderr = GuardedStream(sys.stderr, "stderr", tolerant=True)
    if not isinstance(sys.stdout, GuardedStream) and sys.stdout is not None:
        sys.stdout = GuardedStream(sys.stdout, "stdout", tolerant=False)


def final_flush() -> None:
    """Flush both streams before exit; a failure here is silenced, never a traceback."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            _silence(stream)
