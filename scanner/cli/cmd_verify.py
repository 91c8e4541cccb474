"""`cas-audit verify`, `cas-audit keys generate` and `cas-audit verify-report`: evidence an
auditor can check (the history's seal chain, signed reports)."""

from __future__ import annotations

import click

from scanner.cli.app import _open_store, cli, db_option, handle_errors
from scanner.errors import TamperedError


@cli.command()
@db_option
@handle_errors
def verify(db_url: str | None) -> None:
    """Recompute the history's seal chain from its rows: every finished run, in the order
    it was sealed. Names the first run whose content, order or existence no longer matches
    its seal. Exit 0 intact, 1 broken, 2 usage.

    \b
    Example:
      cas-audit verify --db sqlite:////var/lib/cas-audit/history.db
    """
    store = _open_store(db_url, read_only=True)
    result = store.verify_chain()
    if result.broken is not None:
        where = f" (link {result.broken.position})" if result.broken.position is not None else ""
        raise TamperedError(
            f"the history's seal chain is broken{where}: {result.broken.reason}",
            hint="the history was changed outside cas-audit; compare with a signed report "
                 "(cas-audit verify-report) or a backup")
    pruned = f", {result.pruned} removed by prune (checkpoints)" if result.pruned else ""
    click.echo(f"intact: {result.links} link(s), {result.runs} run(s) recomputed{pruned}; "
               f"newest seal {result.head or 'none (nothing sealed yet)'}")
