"""The error log: where the traceback of an internal error goes, so that stderr stays one line.

A `logging` handler on the "scanner" logger that writes ERROR records (with their
traceback) to a file in `paths.log_folder()`. The file is created only when the first
error is logged: a healthy run leaves no log behind. File mode 0600, folder 0700
(a traceback may name hosts and paths); if the folder cannot be created, the system's
temporary folder is used.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from scanner.util.paths import log_folder
from scanner.util.timefmt import compact_utc

LOGGER = "scanner"


class CrashLog(logging.Handler):
    """Writes ERROR records to one file per process, opened on the first record."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        super().__init__(logging.ERROR)
        self._redact = redact or (lambda text: text)
        self._file_lock = threading.Lock()
        self.path: Path | None = None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"))

    def _open(self) -> Path:
        stamp = compact_utc(datetime.now(UTC))
        name = f"cas-audit-{stamp}-{os.getpid()}.log"
        for folder in (log_folder(), Path(tempfile.gettempdir())):
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError:
                continue
            os.close(fd)
            return folder / name
        raise OSError("no folder to write the error log to")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._redact(self.format(record)) + "\n"
            with self._file_lock:
                if self.path is None:
                    self.path = self._open()
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(text)
        except Exception:
            pass  # the log must never be what breaks a run


_installed: CrashLog | None = None


def install(redact: Callable[[str], str] | None = None) -> CrashLog:
    """Attach the error log to the "scanner" logger (once per process) and return it."""
    global _installed
    if _installed is None:
        _installed = CrashLog(redact)
        logging.getLogger(LOGGER).addHandler(_installed)
    return _installed


def current_path() -> Path | None:
    """The error log written by this process so far, if any."""
    return _installed.path if _installed is not None else None
