"""`cas-audit verify`, `cas-audit keys generate` and `cas-audit verify-report`: evidence an
auditor can check (the history's seal chain, signed reports)."""

from __future__ import annotations

from pathlib import Path

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


@cli.group()
def keys() -> None:
    """Signing keys for reports (report --sign-key, verify-report).

    \b
    Example:
      cas-audit keys generate --out keys
    """


@keys.command("generate")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for cas-audit-signing.key (mode 0600) and cas-audit-signing.pub.")
@handle_errors
def keys_generate(out: Path) -> None:
    """Make an Ed25519 key pair for signing reports: DIR/cas-audit-signing.key (the private
    key, mode 0600: keep it away from the history database) and DIR/cas-audit-signing.pub
    (give it to the auditors). Refuses to replace an existing pair.

    \b
    Example:
      cas-audit keys generate --out keys
    """
    from scanner.util.signing import generate_keys

    private, public, kid = generate_keys(out)
    click.echo(f"wrote {private} (private, mode 0600) and {public}; key id {kid}")


@cli.command("verify-report")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--public-key", "public_key", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The signer's public key (cas-audit-signing.pub).")
@handle_errors
def verify_report(file: Path, public_key: Path) -> None:
    """Check a report against the signature file beside it (FILE.sig.json) and the signer's
    public key: exit 0 when the report is byte for byte the one signed, 1 when anything
    changed (the report, the signature file, or another key signed it), 2 usage.

    \b
    Example:
      cas-audit verify-report audit.xlsx --public-key cas-audit-signing.pub
    """
    from scanner.util.signing import verify_report as check

    fields = check(file, public_key)
    what = f"run {fields.get('run_id')}" if fields.get("run_id") is not None else f"as of {fields.get('as_of')}"
    click.echo(f"intact: {file} is the report signed by key {fields.get('key_id')} ({what}, "
               f"seal {fields.get('seal') or 'none'})")
