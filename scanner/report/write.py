"""Where a report goes: a file (scanner.util.safefile) or stdout. Exporters only see streams."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanner.errors import ConfigError
from scanner.facts import ReportFormat
from scanner.util.safefile import write_file
from scanner.util.timefmt import iso_utc

if TYPE_CHECKING:  # nothing of the store (SQLAlchemy) at import: the command line imports this module
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from scanner.report.model import RunReport

# a file name's ending per format of facts.REPORT_FORMATS (OCSF is JSON Lines)
_SUFFIX: dict[ReportFormat, str] = {"ocsf": "ocsf.jsonl"}
# formats that go to stdout when no --out is given
_STDOUT_BY_DEFAULT: tuple[ReportFormat, ...] = ("json", "csv", "ocsf")


def default_path(report: RunReport, fmt: ReportFormat) -> Path:
    suffix = _SUFFIX.get(fmt, fmt)
    if report.run is None and report.as_of is not None:
        return Path("reports") / f"cas-audit-as-of-{report.as_of.time:%Y%m%dT%H%M%SZ}-{report.lang}.{suffix}"
    return Path("reports") / f"cas-audit-run-{report.run.id if report.run else 'none'}-{report.lang}.{suffix}"


def render(report: RunReport, fmt: ReportFormat) -> bytes:
    """The report in `fmt` (xlsx, json, csv, ocsf, html) as bytes."""
    if fmt == "json":
        from scanner.report.export_json import write_json

        text = io.StringIO()
        write_json(report, text)
        return text.getvalue().encode("utf-8")
    if fmt == "csv":
        from scanner.report.export_csv import write_findings_csv

        text = io.StringIO(newline="")
        write_findings_csv(report, text)
        return text.getvalue().encode("utf-8-sig")  # BOM: Excel then reads UTF-8 correctly
    if fmt == "ocsf":
        from scanner.report.export_ocsf import write_ocsf

        text = io.StringIO()
        write_ocsf(report, text)
        return text.getvalue().encode("utf-8")
    if fmt == "html":
        from scanner.report.export_html import render_html

        return render_html(report).encode("utf-8")
    if fmt == "xlsx":
        from scanner.report.export_xlsx import write_xlsx

        data = io.BytesIO()
        write_xlsx(report, data)
        return data.getvalue()
    raise ConfigError(f"unknown report format {fmt!r}")


def signed_facts(report: RunReport) -> dict[str, Any]:
    """What a report's signature file says besides the file's hash: what the report is of,
    the history's seal, the versions."""
    if report.run is not None:
        return {"run_id": report.run.id, "as_of": None, "seal": report.seal,
                "tool_version": report.run.tool_version, "catalog_version": report.run.catalog_version}
    view = report.as_of
    return {"run_id": None, "as_of": iso_utc(view.time) if view is not None else None, "seal": report.seal,
            "tool_version": view.tool_version if view is not None else None, "catalog_version": None}


def write_report(report: RunReport, fmt: ReportFormat, out: str | None, *, force: bool = False,
                 sign_key: Ed25519PrivateKey | None = None) -> Path | None:
    """Write the report to `out` (a path, '-' for stdout, None for the format's default);
    an existing file is replaced only with `force` (see scanner.util.safefile). With
    `sign_key`, `<file>.sig.json` is written beside it (scanner/util/signing.py)."""
    if out is None:
        out = "-" if fmt in _STDOUT_BY_DEFAULT else str(default_path(report, fmt))
    if sign_key is not None and out == "-":
        raise ConfigError("--sign-key writes a signature beside the report file: give --out FILE",
                          hint=f"cas-audit report --format {fmt} --out report.{fmt} --sign-key KEYFILE")
    data = render(report, fmt)
    if out == "-":
        if fmt == "xlsx" and sys.stdout.isatty():
            raise ConfigError("an xlsx workbook is binary; refusing to print it on a terminal",
                              hint="use --out FILE, or redirect stdout")
        sys.stdout.buffer.write(data if fmt != "csv" else data.removeprefix(b"\xef\xbb\xbf"))
        sys.stdout.flush()
        return None
    path = Path(out)
    write_file(path, data, force=force)
    if sign_key is not None:
        from scanner.util.signing import write_signature

        write_signature(path, data, sign_key, signed_facts(report), force=force)
    return path
