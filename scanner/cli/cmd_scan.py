"""`cas-audit scan`: scan the inventory into the history."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from scanner.cli.app import (
    _open_store,
    account_passwords,
    cli,
    db_option,
    err_console,
    handle_errors,
    warn_unverified_tls,
)
from scanner.cli.output import output
from scanner.facts import SEVERITIES


@cli.command()
@click.option("--inventory", "inventory_path", required=True, type=click.Path(path_type=Path),
              help="TOML inventory of the CAS servers to scan.")
@db_option
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), default=None,
              help="TOML policy: baseline, overrides, waivers, severities (default: rules/baseline.toml).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Servers scanned at once.")
@click.option("--site", default=None, help="Scan only the servers of this AD site.")
@click.option("--fail-on", type=click.Choice(SEVERITIES), default="high", show_default=True,
              help="Exit 1 when an active finding has this severity or a higher one.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=120.0, show_default=True,
              help="Wall-clock limit per server, in seconds.")
@handle_errors
def scan(inventory_path: Path, db_url: str | None, policy_path: Path | None, concurrency: int,
         site: str | None, fail_on: str, timeout_s: float) -> None:
    """Scan every CAS in the inventory and record what it does.

    \b
    Example:
      CAS_AUDIT_PASSWORD=... cas-audit scan --inventory cas.toml --fail-on medium
    Exit codes: 0 clean, 1 findings at or above --fail-on, 3 a server could not be
    scanned, 2 usage or configuration error, 4 internal or storage error, 130 / 143
    interrupted by SIGINT / SIGTERM (the run is recorded aborted).
    """
    from scanner.inventory import load_inventory
    from scanner.judge.catalog import load_catalog
    from scanner.judge.policy import Policy, load_policy

    inventory = load_inventory(inventory_path)
    if site:
        inventory = inventory.only_site(site)
    catalog = load_catalog()
    policy = load_policy(policy_path) if policy_path else Policy.default()
    store = _open_store(db_url)
    password = account_passwords(inventory.targets)
    warn_unverified_tls(inventory.targets)
    with Interrupts() as interrupts:
        outcome = _run_scan_with_progress(inventory, store=store, password=password, policy=policy,
                                          catalog=catalog, concurrency=concurrency, timeout_s=timeout_s,
                                          fail_on=fail_on, site_filter=site, stop=interrupts.stop,
                                          stop_reason=interrupts.reason)
        if interrupts.code is not None:
            output.error(f"run {outcome.run_id} aborted: {interrupts.reason()}; "
                         f"{outcome.scanned + outcome.failed} server(s) recorded")
            _exit_now(interrupts.code)
    _print_summary(store, outcome, fail_on)
    sys.exit(int(outcome.exit_code))


class Interrupts:
    """SIGINT and SIGTERM during a scan (design: exit 130 / 143, run recorded aborted).

    The first signal sets `stop`: run_scan starts no more servers, abandons those in
    flight and records the run aborted. A second signal exits at once (the next command
    that opens the history records the run aborted, its process being gone)."""

    SIGNALS = {signal.SIGINT: ("SIGINT", 130), signal.SIGTERM: ("SIGTERM", 143)}

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.code: int | None = None
        self._name = ""
        self._previous: dict[int, Any] = {}

    def reason(self) -> str:
        return f"interrupted by {self._name}" if self._name else "interrupted"

    def _handle(self, signum: int, _frame: Any) -> None:
        name, code = self.SIGNALS[signal.Signals(signum)]
        if self.stop.is_set():
            os.write(2, output.signal_text(f"{name} again: exiting at once", signal=name, exit_code=code))
            os._exit(code)
        self._name, self.code = name, code
        self.stop.set()
        os.write(2, output.signal_text(f"{name}: abandoning the servers in flight (again to exit at once)",
                                       signal=name))

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _exit_now(code: int) -> None:
    """Exit with `code` without waiting for worker threads still stuck in a server
    (the interpreter would join them at exit)."""
    from scanner.cli.streams import final_flush

    final_flush()
    os._exit(code)


EXIT_MEANING = {0: "clean", 1: "findings at or above --fail-on", 3: "a server could not be scanned",
                4: "internal error"}


def _print_summary(store: Any, outcome: Any, fail_on: str) -> None:
    """The one-screen summary; with --log-format json one `scan-summary` event carrying it all."""
    from scanner.report.summary import summarise, summary_lines

    summary = summarise(store, outcome.run_id)
    code = int(outcome.exit_code)
    verdict = (f"exit {code}: {EXIT_MEANING.get(code, '')} "
               f"({outcome.active_at_or_above} active finding(s) at or above {fail_on})")
    if output.json:
        output.info(summary_lines(summary)[0], event="scan-summary", **summary.as_dict(),
                    fail_on=fail_on, active_at_or_above=outcome.active_at_or_above, exit_code=code)
        return
    for line in [*summary_lines(summary), f"  {verdict}"]:
        output.info(line)
    if code == 4:
        from scanner.util import crashlog

        output.error("an internal error stopped the scan of a server",
                     hint=f"the traceback is in {crashlog.current_path()}")


def _run_scan_with_progress(inventory: Any, **kwargs: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from scanner.scan import run_scan
    from scanner.util import gcpolicy

    gcpolicy.settle()  # the scan's modules are loaded (util/gcpolicy.py)
    progress = Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err_console,
                        disable=not output.live, transient=True)
    with progress:
        task = progress.add_task("", total=len(inventory.targets))

        done = 0

        def advance(observation: Any) -> None:
            nonlocal done
            done += 1
            mark = "ok" if observation.scan_status == "ok" else f"failed ({observation.error_kind})"
            progress.update(task, advance=1, description=f"{observation.name}: {mark}")
            ok = observation.scan_status == "ok"
            if ok and output.live:
                return  # the bar shows it; a log (cron) gets one line per server
            line = (f"[{done}/{len(inventory.targets)}] {observation.name}: {mark}"
                    + (f": {observation.error}" if observation.error else ""))
            output.emit("info" if ok else "warning", "server-scanned", line, server=observation.name,
                        address=observation.address, status=observation.scan_status,
                        error_kind=observation.error_kind, done=done, planned=len(inventory.targets))

        return run_scan(inventory, on_result=advance, **kwargs)
