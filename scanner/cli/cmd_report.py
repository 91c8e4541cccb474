"""`cas-audit report` and `cas-audit evidence`: what leaves the history for auditors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scanner.cli.app import (
    _open_store,
    cli,
    db_option,
    err_console,
    handle_errors,
)
from scanner.cli.output import output
from scanner.errors import ConfigError
from scanner.facts import LANGUAGES, PROTOCOLS, REPORT_FORMATS, Language, Protocol, ReportFormat


def _resolve_run(store: Any, run: str) -> int:
    if run == "latest":
        run_id = store.latest_run_id(finished_only=True)  # never a running or aborted run
        if run_id is None:
            if store.latest_run_id() is not None:
                raise ConfigError("the history holds no finished scan yet (only running or aborted ones)",
                                  hint="name one with --run ID; `cas-audit history` lists them")
            raise ConfigError("the history holds no scan yet", hint="run `cas-audit scan` first")
        return int(run_id)
    try:
        return int(run)
    except ValueError:
        raise ConfigError(f"--run must be a run id or 'latest', not {run!r}") from None


@cli.command()
@db_option
@click.option("--run", "run", default=None, help="Run id, or 'latest' (the default).")
@click.option("--as-of", "as_of", default=None, metavar="TIME|now",
              help="Organisation view: every server's latest observation at or before TIME "
                   "(ISO 8601 date or time, UTC unless an offset is given), from whichever run.")
@click.option("--stale-days", "stale_days", type=click.IntRange(min=0), default=None,
              help="With --as-of: flag servers whose observation is older than this many days [default: 7].")
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="xlsx", show_default=True)
@click.option("--out", "out", default=None,
              help="Output file, or - for stdout (default: reports/cas-audit-run-<id>-<lang>.xlsx for "
                   "xlsx and html, stdout for json, csv and ocsf).")
@click.option("--lang", type=click.Choice(LANGUAGES), default="en", show_default=True)
@click.option("--force", is_flag=True, help="Replace the --out file if it exists.")
@click.option("--sign-key", "sign_key", default=None, metavar="FILE",
              type=click.Path(path_type=Path, dir_okay=False),
              help="Ed25519 private key (cas-audit keys generate): write <report>.sig.json beside the report.")
@handle_errors
def report(db_url: str | None, run: str | None, as_of: str | None, stale_days: int | None, fmt: ReportFormat,
           out: str | None, lang: Language, force: bool, sign_key: Path | None) -> None:
    """Write the report of one run (findings with evidence) as xlsx, json, csv, ocsf (JSON Lines of
    OCSF 1.5.0 Compliance Findings, for a SIEM) or html (one self-contained page), or with
    --as-of the organisation view across runs (scans split by site or scanner).

    \b
    Examples:
      cas-audit report --format xlsx --lang de --out audit.xlsx
      cas-audit report --as-of now --stale-days 7 --format json --out organisation.json
      cas-audit report --run latest --format ocsf --out findings.ocsf.jsonl
      cas-audit report --format xlsx --out audit.xlsx --sign-key keys/cas-audit-signing.key
      cas-audit report --format html --lang de --out audit.html
    """
    from scanner.report.write import write_report

    key = None
    if sign_key is not None:  # refused before any work when other users may read it
        from scanner.util.signing import load_private_key

        key = load_private_key(sign_key)

    if as_of is None:
        if stale_days is not None:
            raise ConfigError("--stale-days goes with --as-of", hint="cas-audit report --as-of now --stale-days 7")
        from scanner.report.build import build_report

        store = _open_store(db_url, read_only=True)
        model = build_report(store, _resolve_run(store, run or "latest"), lang=lang)
        shown = model.run
        if shown is not None and shown.status in ("aborted", "running"):
            why = f" ({shown.end_reason})" if shown.end_reason else ""
            output.warning(f"run {shown.id} is {shown.status}{why}: it did not finish, its findings "
                           "are incomplete and say nothing about the servers it did not reach")
    else:
        from scanner.report.organisation import (
            DEFAULT_STALE_DAYS,
            build_organisation_report,
            parse_as_of,
            stale_cutoff,
        )

        if run is not None:
            raise ConfigError("--run and --as-of exclude each other: a run's report, or the organisation view")
        try:
            moment = parse_as_of(as_of)
        except ValueError as exc:
            raise ConfigError(f"--as-of: {exc}") from None
        stale = DEFAULT_STALE_DAYS if stale_days is None else stale_days
        try:
            stale_cutoff(moment, stale)
        except ValueError as exc:
            raise ConfigError(f"--as-of with --stale-days: {exc}") from None
        store = _open_store(db_url, read_only=True)
        model = build_organisation_report(store, moment, stale_days=stale, lang=lang)
    if key is not None:
        from dataclasses import replace

        from scanner.util.signing import key_id, signature_path

        model = replace(model, key_id=key_id(key.public_key()))
    target = write_report(model, fmt, out, force=force, sign_key=key)
    if target is not None:
        err_console.print(f"wrote {target}", highlight=False)
        if key is not None:
            err_console.print(f"wrote {signature_path(target)} (key {model.key_id})", highlight=False)


@cli.command()
@db_option
@click.option("--server", required=True)
@click.option("--protocol", type=click.Choice(PROTOCOLS), required=True)
@click.option("--run", "run", default=None,
              help="Run id, or 'latest' (default: the latest run that scanned the server successfully).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace the --out file if it exists.")
@click.option("--referenced", is_flag=True,
              help="Write the file the config file's appSettings names in file= or configSource= instead.")
@handle_errors
def evidence(db_url: str | None, server: str, protocol: Protocol, run: str | None, out: Path, force: bool,
             referenced: bool) -> None:
    """Write a config file exactly as it was collected (the backup to restore after an SP reset).

    \b
    Examples:
      cas-audit evidence --server CAS03 --protocol pop3 --run 1 --out Microsoft.Exchange.Pop3.exe.Config
      cas-audit evidence --server CAS03 --protocol pop3 --referenced --out appSettings.extra.config
    """
    from scanner.report.config_copy import write_config_copy

    store = _open_store(db_url, read_only=True)
    run_id = None if run is None else _resolve_run(store, run)
    digest, size = write_config_copy(store, server, protocol, run_id, out, force=force, referenced=referenced)
    err_console.print(f"wrote {out} ({size} bytes, sha256 {digest})", highlight=False)
