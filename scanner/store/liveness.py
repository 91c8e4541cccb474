"""Is the scanner that owns a `running` run still alive?

A run records its owner: the host (`scanning_host`), the process id and the process's
start time (`owner_pid`, `owner_started`), and a heartbeat (`heartbeat_at`) that the
scanner renews as servers complete and every HEARTBEAT_S seconds. A run is dead when

- its owner ran on this host and that process is gone (or its id now belongs to a
  process that started at another time), or
- its last heartbeat (its start, for runs recorded before heartbeats) is older than
  STALE_AFTER, whichever host ran it.

Heartbeats are written and judged with one clock, the database's: on PostgreSQL the
server's `now()`, so that scanner and reader hosts whose clocks differ (by more than
STALE_AFTER, even) never judge a live run dead or a dead one alive; on SQLite the clock of
the host the file is on, the only host that may open it (SQLite is not for network
shares). The run's own times (`started_at`, `finished_at`) stay the scanner's.

The next command that opens the history records dead runs as `aborted`.
On Windows the process probe is not used (os.kill would end the process): the heartbeat
decides there.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scanner.util.timefmt import display_utc

HEARTBEAT_S = 30.0
STALE_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class Owner:
    """The process that owns a run."""

    host: str
    pid: int
    started: datetime | None  # the process's start time, when the platform tells it


def _linux_start(pid: int) -> datetime | None:
    """When process `pid` started, from /proc (None when unknown)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        hertz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return datetime.fromtimestamp(boot + ticks / hertz, UTC)


def this_process() -> Owner:
    """The owner record of the running process."""
    return Owner(socket.gethostname(), os.getpid(), _linux_start(os.getpid()))


def process_alive(pid: int, started: datetime | None) -> bool | None:
    """Whether process `pid` (started at `started`) still runs on this host; None if unknown."""
    if sys.platform == "win32" or pid <= 0:
        return None
    try:
        os.kill(pid, 0)  # posix-only: guarded (signal 0 only probes; Windows returned above)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    except OSError:
        return None
    if started is not None:
        actual = _linux_start(pid)
        if actual is not None and abs((actual - started).total_seconds()) > 2:
            return False  # the id was reused by a later process
    return True


def death_reason(*, host: str, pid: int | None, started: datetime | None, heartbeat: datetime,
                 now: datetime, here: str) -> str | None:
    """Why the run's owner is presumed dead, or None while it may be alive."""
    if host == here and pid is not None:
        alive = process_alive(pid, started)
        if alive is False:
            return f"its scanner (process {pid} on {host}) ended without finishing the run"
        if alive is True:
            return None
    if now - heartbeat > STALE_AFTER:
        return (f"no heartbeat from its scanner on {host} since "
                f"{display_utc(heartbeat)}Z")
    return None
