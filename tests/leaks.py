"""Processes a test session leaves running (tests/conftest.py checks at the session's end).

A process counts as the session's when, on Linux's /proc, it is
- a descendant of the pytest process, or
- carries the session's mark in its environment (`SESSION_MARK`, set in pytest's own
  environment at the start, so every process the tests start inherits it unless a test
  builds an environment from nothing; /proc/PID/environ is the environment the process
  was started with), or
- names the session's temporary folder on its command line (fixtures' fleets, realms,
  databases live there),
and it did not exist when the session started (pid and start time). The last two find the
orphans: a process whose parent was killed is re-parented to init (or a subreaper) and is
no longer a descendant. Zombies are dead and do not count.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
SESSION_MARK = "PYTEST_CAS_AUDIT_SESSION"
# how long the check waits for a process a fixture's teardown has just signalled to end
GRACE_S = float(os.environ.get("PYTEST_CAS_AUDIT_LEAK_GRACE_S", "5"))


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int          # clock ticks after boot: with the pid, the process's identity
    state: str
    cmdline: str


def available() -> bool:
    return (PROC / "self" / "stat").is_file()


def _read(pid: int) -> Proc | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:        # gone meanwhile, or not ours to read
        return None
    fields = stat[stat.rfind(")") + 2:].split()   # the command name may hold spaces and ')'
    cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return Proc(pid, int(fields[1]), int(fields[19]), fields[0], cmdline)


def processes() -> dict[int, Proc]:
    found = {}
    for entry in os.listdir(PROC):
        if entry.isdigit() and (proc := _read(int(entry))) is not None:
            found[proc.pid] = proc
    return found


def identities(procs: dict[int, Proc]) -> set[tuple[int, int]]:
    return {(p.pid, p.start) for p in procs.values()}


def add_mark(environ: MutableMapping[str, str], mark: str) -> None:
    """Add this session's mark to `environ`, keeping an outer session's (a pytest run by a
    test): the outer session finds what the inner one leaves too."""
    outer = environ.get(SESSION_MARK)
    environ[SESSION_MARK] = f"{outer},{mark}" if outer else mark


def _has_mark(pid: int, mark: bytes) -> bool:
    try:
        environ = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    prefix = SESSION_MARK.encode() + b"="
    return any(mark in entry[len(prefix):].split(b",") for entry in environ if entry.startswith(prefix))


def session_processes(before: set[tuple[int, int]], mark: str, folders: tuple[str, ...]) -> list[Proc]:
    """The live processes this session started (see the module's text), pytest itself excluded."""
    me = os.getpid()
    procs = processes()
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    descendants: set[int] = set()
    todo = list(children.get(me, []))
    while todo:
        pid = todo.pop()
        if pid not in descendants:
            descendants.add(pid)
            todo.extend(children.get(pid, []))
    marked = mark.encode()
    found = []
    for proc in procs.values():
        if proc.pid == me or proc.state == "Z" or (proc.pid, proc.start) in before:
            continue
        if (proc.pid in descendants or any(f"{folder}/" in proc.cmdline for folder in folders)
                or _has_mark(proc.pid, marked)):
            found.append(proc)
    return found


def wait_gone(procs: list[Proc], seconds: float) -> list[Proc]:
    """Wait up to `seconds` for `procs` to end (a fixture may have signalled one just now);
    those still alive. pidfds signal an exit without polling."""
    if not hasattr(os, "pidfd_open"):
        return [p for p in procs if _same(p)]
    fds: dict[int, Proc] = {}
    for proc in procs:
        try:
            fds[os.pidfd_open(proc.pid)] = proc
        except OSError:
            continue
    try:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + seconds
        alive = dict(fds)
        while alive and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                alive.pop(fd, None)
        return [p for p in alive.values() if _same(p)]
    finally:
        for fd in fds:
            os.close(fd)


def _same(proc: Proc) -> bool:
    now = _read(proc.pid)
    return now is not None and now.start == proc.start and now.state != "Z"


def kill(procs: list[Proc]) -> None:
    for proc in procs:
        if _same(proc):
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except OSError:
                pass
