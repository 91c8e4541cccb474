"""Writing the files a user names (--out): never half-written, never a surprise.

- A regular file is written to a temporary file in the same folder and renamed over
  the target: a reader sees the old file or the new one, never half of one.
- An existing file is replaced only with `force` (the command's --force); it keeps its
  permission bits. A symbolic link is followed: the file it points to is replaced, the
  link stays. (A replaced file is a new inode: hard links to the old one keep the old
  content.)
- A device node or FIFO (/dev/null, /dev/stdout, a named pipe) is never replaced: the
  data is written into it.
- A new file gets mode 0666 minus the umask (0644 with the usual umask 022), like any
  file a shell redirection creates.

Errors: ConfigError (exit 2) for a refused overwrite or a folder, OutputError (exit 4)
when the operating system refuses the write.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path

from scanner.errors import ConfigError, OutputError


def _into_special(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, *, force: bool = False, mode: int | None = None) -> None:
    """Write `data` to `path` as the module says; with `mode` (e.g. 0o600 for a private key)
    the file is created with exactly those permission bits, never wider, from the start."""
    path = Path(path)
    try:
        try:
            existing: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            existing = None
            if os.path.lexists(path) and not force:  # a symbolic link to nothing
                raise ConfigError(f"{path} is a symbolic link to a missing file; refusing to write through it",
                                  hint="pass --force to create the file it points to") from None
        if existing is not None:
            mode = existing.st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                _into_special(path, data)
                return
            if stat.S_ISDIR(mode):
                raise ConfigError(f"{path} is a folder", hint="name a file to write")
            if not force:
                raise ConfigError(f"{path} already exists; refusing to overwrite it",
                                  hint="pass --force to replace it, or choose another --out")
        target = Path(os.path.realpath(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode & 0o600)
        if mode is not None and sys.platform != "win32":
            os.fchmod(fd, mode)  # posix-only: guarded (exact bits, whatever the umask)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if existing is not None and mode is None and sys.platform != "win32":  # Windows: no mode bits
                os.chmod(tmp, stat.S_IMODE(existing.st_mode))  # posix-only: guarded
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
