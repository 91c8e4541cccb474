"""When a `cas-audit` process collects its cyclic garbage.

A command imports a large, long-lived heap before it works (a scan: SQLAlchemy, lxml,
pywinrm, requests, cryptography; about 110,000 objects the collector tracks), and with
CPython's default thresholds every full collection walks all of it again: importing a
scan's modules ran two full collections (0.75 -> 0.62-0.70 s of CPU without them), and a
1,000-server scan spent 0.2-0.3 ms of CPU per server in the collector (bench/README.md,
"Garbage collection"). So the command line's entry (`scanner.cli.main`):

- `start_up`: the young generation is collected only every START_UP_THRESHOLD allocations
  while the modules load, which in practice means no collection at all (the imports leave
  no garbage worth finding), yet a command that never settles is still collected;
- `settle`, once a command has imported what it needs and before its work (the history
  opened, a scan or a preflight about to start): the heap so far is frozen
  (`gc.freeze`: never walked by a collection again, never freed, as it lives until the
  process ends anyway), and the young generation is collected every THRESHOLD
  allocations instead of CPython's 700.

Only a process that called `start_up` settles: a library caller, or a test driving the
commands in its own process, keeps its own collector settings.
"""

from __future__ import annotations

import gc

START_UP_THRESHOLD = 100_000
THRESHOLD = 10_000
_started = False


def start_up() -> None:
    """At the command line's entry, before the commands import their modules."""
    global _started
    _started = True
    _, middle, old = gc.get_threshold()
    gc.set_threshold(START_UP_THRESHOLD, middle, old)


def settle() -> None:
    """Before a command's work: freeze what is alive now and collect the young generation
    every THRESHOLD allocations. Again later (after more imports) it freezes those too.
    Nothing unless `start_up` was called in this process."""
    if not _started:
        return
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(THRESHOLD, middle, old)


def started() -> bool:
    """Whether this process follows the policy (`start_up` was called)."""
    return _started
