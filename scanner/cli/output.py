"""What the command line writes to stderr: text for people (rich, colour unless NO_COLOR)
or, with `--log-format json`, one JSON object per line for schedulers and SIEMs; `--quiet`
keeps only warnings and errors. Results a command is asked for (tables, `report --out -`)
go to stdout and are never silenced.

Every line passes through one place, which replaces each secret the command line learnt
(passwords from CAS_AUDIT_PASSWORD, the keyring or a prompt) with `***` before it is written.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.text import Text

from scanner.util.timefmt import iso_utc_ms


def stream_safe(stream: IO[str] | None) -> None:
    """Let `stream` print any character: replace what its encoding cannot show.

    A scheduled task on Windows redirects output to a file in the ANSI code page (cp1252),
    which cannot encode e.g. a Cyrillic user name from event 1008 or a box-drawing character:
    without this, printing it raises UnicodeEncodeError and the run dies after its work.
    """
    if stream is None or not isinstance(stream, io.TextIOWrapper):
        return
    encoding = (stream.encoding or "").lower().replace("_", "-")
    if encoding.startswith("utf-") or stream.errors in ("replace", "backslashreplace"):
        return
    try:
        stream.reconfigure(errors="replace")
    except (ValueError, io.UnsupportedOperation):  # a closed or detached stream
        pass


class _Sink(io.TextIOBase):
    """rich's file when stderr is not a terminal: every line a command prints passes through
    Output, which redacts secrets and, in json mode, turns the line into an info event."""

    def __init__(self, output: Output, level: str) -> None:
        super().__init__()
        self._output = output
        self._level = level

    def write(self, text: str) -> int:
        if self._output.json:
            for line in text.splitlines():
                if line.strip():
                    self._output.emit(self._level, "message", line.rstrip())
        else:
            sys.stderr.write(self._output.redact(text))
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return False


class _LogBridge(logging.Handler):
    """Warnings and errors the library logs (logging module) reach stderr through Output."""

    def __init__(self, output: Output) -> None:
        super().__init__(logging.WARNING)
        self._output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "error" if record.levelno >= logging.ERROR else "warning"
            self._output.emit(level, "log", record.getMessage(), logger=record.name)
        except Exception:
            self.handleError(record)


def _isatty(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # closed
        return False


class Output:
    """The stderr of one command invocation, configured by the group's options."""

    def __init__(self) -> None:
        # `console` is what commands print their progress and messages with (app.err_console);
        # `alerts` prints warnings and errors, which --quiet does not silence.
        self.console = Console(stderr=True, soft_wrap=True)
        self.alerts = Console(stderr=True, soft_wrap=True)
        self.log_format = "text"
        self.quiet = False
        self._secrets: set[str] = set()

    def configure(self, *, quiet: bool = False, log_format: str = "text") -> None:
        """Apply --quiet and --log-format; re-read NO_COLOR (https://no-color.org/)."""
        self.quiet = quiet
        self.log_format = log_format
        no_color = os.environ.get("NO_COLOR", "") != ""
        for console in (self.console, self.alerts):
            console.no_color = no_color
        self.console.quiet = quiet
        # a terminal gets rich's own rendering; a log file or pipe gets the redacting sink
        piped = log_format == "json" or not _isatty(sys.stderr)
        self.console.file = _Sink(self, "info") if piped else None  # type: ignore[assignment]
        self.alerts.file = _Sink(self, "warning") if piped else None  # type: ignore[assignment]
        stream_safe(sys.stderr)
        stream_safe(sys.stdout)
        logger = logging.getLogger("scanner")
        if not any(isinstance(h, _LogBridge) for h in logger.handlers):
            logger.addHandler(_LogBridge(self))
        warnings.showwarning = self._show_warning

    def _show_warning(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: IO[str] | None = None, line: str | None = None) -> None:
        """A Python warning a library raises (warnings.warn) is one of our warning lines (a
        `python-warning` event with --log-format json), not Python's two raw lines."""
        if file is not None:  # written somewhere on purpose: as Python would
            warnings._showwarning_orig(message, category, filename, lineno, file, line)  # type: ignore[attr-defined]
            return
        self.emit("warning", "python-warning", f"{category.__name__}: {message}",
                  source=f"{Path(filename).name}:{lineno}")

    @property
    def json(self) -> bool:
        return self.log_format == "json"

    @property
    def live(self) -> bool:
        """Whether a live progress display may be drawn (text on a terminal, not quiet)."""
        return not self.json and not self.quiet and self.console.is_terminal

    def add_secret(self, value: str | None) -> None:
        """Never write `value` (e.g. a password): it is replaced by *** wherever it appears."""
        if value and len(value) >= 3:
            self._secrets.add(value)

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def emit(self, level: str, event: str, message: str, **fields: Any) -> None:
        """One event: a JSON line in json mode; in text mode the message (info only unless quiet)."""
        if level == "info" and self.quiet:
            return
        if self.json:
            stream = sys.stderr
            stream.write(self.json_line(level, event, message, **fields))
            stream.flush()
            return
        console = self.console if level == "info" else self.alerts
        style = {"warning": "yellow", "error": "bold red"}.get(level, "")
        text = Text(self.redact(message))
        if level != "info":
            text = Text.assemble((f"{level}: ", style), text)
        console.print(text, highlight=False)

    def json_line(self, level: str, event: str, message: str, **fields: Any) -> str:
        """The JSON line (with its newline) of one event, redacted: `time` (UTC, to the
        millisecond), `level`, `event`, `message`, then `fields`."""
        record: dict[str, Any] = {"time": iso_utc_ms(datetime.now(UTC)), "level": level, "event": event,
                                  "message": message}
        record.update({k: v for k, v in fields.items() if k not in record})
        return self.redact(json.dumps(record, ensure_ascii=True, default=str)) + "\n"

    def signal_text(self, message: str, **fields: Any) -> bytes:
        """What a signal handler writes to fd 2 with os.write (never through sys.stderr, whose
        buffer the interrupted code may be inside): a `signal` warning event in json mode,
        else the message on a line of its own."""
        if self.json:
            return self.json_line("warning", "signal", message, **fields).encode("utf-8")
        return f"\n{self.redact(message)}\n".encode("utf-8", "replace")

    def result(self, event: str, message: str, **fields: Any) -> None:
        """A line of a command's result on stdout (never silenced by --quiet): the message in
        text mode, an info event with `fields` (one JSON object) in json mode."""
        if self.json:
            sys.stdout.write(self.json_line("info", event, message, **fields))
            sys.stdout.flush()
            return
        click.echo(self.redact(message))

    def info(self, message: str, event: str = "message", **fields: Any) -> None:
        self.emit("info", event, message, **fields)

    def warning(self, message: str, event: str = "warning", **fields: Any) -> None:
        self.emit("warning", event, message, **fields)

    def error(self, message: str, *, hint: str | None = None, event: str = "error", **fields: Any) -> None:
        """An error and its hint: always shown, whatever --quiet says."""
        if self.json:
            self.emit("error", event, message, **({"hint": hint} if hint else {}), **fields)
            return
        self.alerts.print(Text.assemble(("error: ", "bold red"), self.redact(message)), highlight=False)
        if hint:
            self.alerts.print(Text.assemble(("hint: ", "yellow"), self.redact(hint)), highlight=False)


output = Output()
