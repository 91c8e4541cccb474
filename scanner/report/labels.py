"""Words of the auditor's workbook and CSV: sheet names, column headers, state and severity
words, in English and German.

Values that come from a server (service states, builds, paths) are evidence and are shown as
collected; only the scanner's own vocabulary is translated here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from scanner.errors import ConfigError

LANGUAGES: tuple[str, ...] = ("en", "de")

SHEETS: tuple[str, ...] = (
    "summary",
    "findings",
    "servers",
    "changes",
    "evidence",
    "waivers",
    "scope",
    "rules",
)

_EN: dict[str, str] = {
    # sheets
    "sheet.summary": "Summary",
    "sheet.findings": "Findings",
    "sheet.servers": "Servers",
    "sheet.changes": "Changes",
    "sheet.evidence": "Evidence",
    "sheet.waivers": "Waivers",
    "sheet.scope": "Scope",
    "sheet.rules": "Rules",
    # summary
    "summary.item": "Item",
    "summary.value": "Value",
    "summary.organisation": "Organisation",
    "summary.run": "Run",
    "summary.status": "Run status",
    "summary.started": "Started (UTC)",
    "summary.finished": "Finished (UTC)",
    "summary.operator": "Operator account",
    "summary.scanning_host": "Scanning host",
    "summary.tool_version": "Tool version",
    "summary.catalog_version": "Rule catalog version",
    "summary.site_filter": "Site filter",
    "summary.planned": "Servers planned",
    "summary.scanned": "Servers scanned",
    "summary.failed": "Servers failed",
    "summary.by_severity": "Active findings by severity",
    "summary.by_site": "Active findings by site",
    "summary.no_site": "(no site)",
    "summary.trend": "Active findings over the last runs",
    "summary.count": "Count",
    "summary.chart_y": "Active findings",
    "summary.as_of": "As of (UTC)",
    "summary.stale_days": "Stale after (days)",
    "summary.servers": "Servers",
    "summary.stale_servers": "Stale servers",
    "summary.runs": "Runs drawn on",
    "col.source_run": "From run",
    "col.stale": "Stale",
    # findings
    "col.rule": "Rule",
    "col.title": "Title",
    "col.severity": "Severity",
    "col.state": "State",
    "col.server": "Server",
    "col.site": "Site",
    "col.protocol": "Protocol",
    "col.observed": "Observed",
    "col.expected": "Expected (baseline)",
    "col.message": "Finding",
    "col.remediation": "Remediation",
    "col.first_seen_run": "First seen in run",
    "col.first_seen_at": "First seen (UTC)",
    "col.waiver": "Waiver",
    "col.evidence": "Evidence",
    # servers
    "col.address": "Address",
    "col.scan_status": "Scan status",
    "col.scanned_at": "Scanned (UTC)",
    "col.computer": "Computer name",
    "col.reported_site": "Site reported by server",
    "col.build": "Build",
    "col.service_pack": "Service pack",
    "col.rollup": "Update rollup",
    "col.rollup_listed": "Rollup in Patches list",
    "col.build_check": "Build and Patches list",
    "col.p.value": "{p} AllowCrossSiteSessions",
    "col.p.source": "{p} value source",
    "col.p.config_status": "{p} config status",
    "col.p.service": "{p} service state",
    "col.p.start_mode": "{p} start mode",
    "col.p.pending_restart": "{p} pending restart",
    "col.p.refused_logons": "{p} refused logons",
    # changes
    "col.field": "What changed",
    "col.before": "Before",
    "col.after": "After",
    "col.before_run": "Before: run",
    "col.after_run": "After: run",
    "col.before_at": "Before (UTC)",
    "col.after_at": "After (UTC)",
    "col.build_changed": "Build changed in interval",
    # evidence
    "col.config_path": "Config file path",
    "col.sha256": "SHA-256",
    "col.size": "Size (bytes)",
    "col.modified": "LastWriteTimeUtc (UTC)",
    "col.collected_at": "Collected (UTC)",
    "col.method": "Collection method",
    "col.encoding": "File encoding",
    "col.raw_value": "Value as written",
    "col.key_notes": "Key notes",
    "col.config_status": "Config status",
    "col.config_detail": "Why the value is unknown or not usable",
    "method.winrm": "WinRM collector: [System.IO.File]::ReadAllBytes, base64",
    # waivers
    "col.scope": "Scope",
    "col.justification": "Justification",
    "col.approver": "Approver",
    "col.created": "Created",
    "col.expires": "Expires",
    "col.waiver_state": "Waiver state",
    # scope
    "col.error_kind": "Error kind",
    "col.reason": "Reason",
    # rules
    "col.applied_severity": "Severity (applied)",
    "col.default_severity": "Default severity",
    "col.overridden": "Overridden by policy",
    "col.rationale": "Rationale",
    "col.references": "References",
    # words
    "severity.critical": "critical",
    "severity.high": "high",
    "severity.medium": "medium",
    "severity.low": "low",
    "severity.info": "info",
    "state.new": "new",
    "state.persisting": "persisting",
    "state.persisting_since": "persisting since {date} (run {run})",
    "state.persisting_since_run": "persisting since run {run}",
    "state.waived": "waived",
    "state.waiver-expired": "waiver expired",
    "scan.ok": "scanned",
    "scan.error": "failed",
    "scan.not-scanned": "not scanned",
    "run.running": "running",
    "run.complete": "complete",
    "run.partial": "partial",
    "run.aborted": "aborted",
    "config.ok": "ok",
    "config.missing": "missing",
    "config.malformed": "not well-formed",
    "config.invalid-value": "invalid value",
    "config.unreadable": "unreadable",
    "source.file": "file",
    "source.default": "default (no key)",
    "waiver.active": "active",
    "waiver.expired": "expired",
    "waiver.unused": "unused",
    "field.allow_cross_site": "AllowCrossSiteSessions",
    "field.build": "Build",
    "field.service": "Service state",
    "field.start_mode": "Start mode",
    "field.config_sha256": "Config file (SHA-256)",
    "value.true": "true",
    "value.false": "false",
    "value.unknown": "unknown",
    "build_check.agrees": "agree",
    "build_check.disagrees": "disagree: the build names another rollup",
    "build_check.not-in-table": "build not in Microsoft's table",
    "build_check.no-build": "no build",
    "yes": "yes",
    "no": "no",
    "protocol.pop3": "POP3",
    "protocol.imap4": "IMAP4",
}

_DE: dict[str, str] = {
    "sheet.summary": "Zusammenfassung",
    "sheet.findings": "Befunde",
    "sheet.servers": "Server",
    "sheet.changes": "Änderungen",
    "sheet.evidence": "Nachweise",
    "sheet.waivers": "Ausnahmen",
    "sheet.scope": "Prüfumfang",
    "sheet.rules": "Regeln",
    "summary.item": "Angabe",
    "summary.value": "Wert",
    "summary.organisation": "Organisation",
    "summary.run": "Lauf",
    "summary.status": "Status des Laufs",
    "summary.started": "Beginn (UTC)",
    "summary.finished": "Ende (UTC)",
    "summary.operator": "Ausführendes Konto",
    "summary.scanning_host": "Prüfender Rechner",
    "summary.tool_version": "Version des Werkzeugs",
    "summary.catalog_version": "Version des Regelkatalogs",
    "summary.site_filter": "Standortfilter",
    "summary.planned": "Geplante Server",
    "summary.scanned": "Geprüfte Server",
    "summary.failed": "Nicht prüfbare Server",
    "summary.by_severity": "Aktive Befunde nach Schweregrad",
    "summary.by_site": "Aktive Befunde nach Standort",
    "summary.no_site": "(ohne Standort)",
    "summary.trend": "Aktive Befunde der letzten Läufe",
    "summary.count": "Anzahl",
    "summary.chart_y": "Aktive Befunde",
    "summary.as_of": "Stand (UTC)",
    "summary.stale_days": "Veraltet nach (Tagen)",
    "summary.servers": "Server",
    "summary.stale_servers": "Veraltete Server",
    "summary.runs": "Herangezogene Läufe",
    "col.source_run": "Aus Lauf",
    "col.stale": "Veraltet",
    "col.rule": "Regel",
    "col.title": "Titel",
    "col.severity": "Schweregrad",
    "col.state": "Zustand",
    "col.server": "Server",
    "col.site": "Standort",
    "col.protocol": "Protokoll",
    "col.observed": "Beobachtet",
    "col.expected": "Erwartet (Vorgabe)",
    "col.message": "Befund",
    "col.remediation": "Abhilfe",
    "col.first_seen_run": "Erstmals gesehen in Lauf",
    "col.first_seen_at": "Erstmals gesehen (UTC)",
    "col.waiver": "Ausnahme",
    "col.evidence": "Nachweis",
    "col.address": "Adresse",
    "col.scan_status": "Prüfstatus",
    "col.scanned_at": "Geprüft (UTC)",
    "col.computer": "Computername",
    "col.reported_site": "Vom Server gemeldeter Standort",
    "col.build": "Build",
    "col.service_pack": "Service Pack",
    "col.rollup": "Updaterollup",
    "col.rollup_listed": "Rollup laut Patches-Liste",
    "col.build_check": "Build und Patches-Liste",
    "col.p.value": "{p} AllowCrossSiteSessions",
    "col.p.source": "{p} Herkunft des Werts",
    "col.p.config_status": "{p} Zustand der Konfiguration",
    "col.p.service": "{p} Dienststatus",
    "col.p.start_mode": "{p} Starttyp",
    "col.p.pending_restart": "{p} Neustart ausstehend",
    "col.p.refused_logons": "{p} abgewiesene Anmeldungen",
    "col.field": "Was sich geändert hat",
    "col.before": "Vorher",
    "col.after": "Nachher",
    "col.before_run": "Vorher: Lauf",
    "col.after_run": "Nachher: Lauf",
    "col.before_at": "Vorher (UTC)",
    "col.after_at": "Nachher (UTC)",
    "col.build_changed": "Build im Zeitraum geändert",
    "col.config_path": "Pfad der Konfigurationsdatei",
    "col.sha256": "SHA-256",
    "col.size": "Größe (Bytes)",
    "col.modified": "LastWriteTimeUtc (UTC)",
    "col.collected_at": "Erhoben (UTC)",
    "col.method": "Erhebungsmethode",
    "col.encoding": "Kodierung der Datei",
    "col.raw_value": "Wert wie geschrieben",
    "col.key_notes": "Hinweise zum Schlüssel",
    "col.config_status": "Zustand der Konfiguration",
    "col.config_detail": "Warum der Wert unbekannt oder unbrauchbar ist",
    "method.winrm": "WinRM-Kollektor: [System.IO.File]::ReadAllBytes, Base64",
    "col.scope": "Geltungsbereich",
    "col.justification": "Begründung",
    "col.approver": "Genehmigt von",
    "col.created": "Erstellt",
    "col.expires": "Gültig bis",
    "col.waiver_state": "Zustand der Ausnahme",
    "col.error_kind": "Fehlerart",
    "col.reason": "Grund",
    "col.applied_severity": "Schweregrad (angewandt)",
    "col.default_severity": "Standard-Schweregrad",
    "col.overridden": "Durch Richtlinie geändert",
    "col.rationale": "Begründung",
    "col.references": "Quellen",
    "severity.critical": "kritisch",
    "severity.high": "hoch",
    "severity.medium": "mittel",
    "severity.low": "niedrig",
    "severity.info": "Information",
    "state.new": "neu",
    "state.persisting": "fortbestehend",
    "state.persisting_since": "besteht seit {date} (Lauf {run})",
    "state.persisting_since_run": "besteht seit Lauf {run}",
    "state.waived": "durch Ausnahme genehmigt",
    "state.waiver-expired": "Ausnahme abgelaufen",
    "scan.ok": "geprüft",
    "scan.error": "fehlgeschlagen",
    "scan.not-scanned": "nicht geprüft",
    "run.running": "läuft",
    "run.complete": "vollständig",
    "run.partial": "unvollständig",
    "run.aborted": "abgebrochen",
    "config.ok": "in Ordnung",
    "config.missing": "fehlt",
    "config.malformed": "nicht wohlgeformt",
    "config.invalid-value": "ungültiger Wert",
    "config.unreadable": "nicht lesbar",
    "source.file": "Datei",
    "source.default": "Standard (kein Schlüssel)",
    "waiver.active": "aktiv",
    "waiver.expired": "abgelaufen",
    "waiver.unused": "nicht genutzt",
    "field.allow_cross_site": "AllowCrossSiteSessions",
    "field.build": "Build",
    "field.service": "Dienststatus",
    "field.start_mode": "Starttyp",
    "field.config_sha256": "Konfigurationsdatei (SHA-256)",
    "value.true": "true",
    "value.false": "false",
    "value.unknown": "unbekannt",
    "build_check.agrees": "stimmen überein",
    "build_check.disagrees": "widersprechen sich: der Build nennt ein anderes Rollup",
    "build_check.not-in-table": "Build nicht in Microsofts Tabelle",
    "build_check.no-build": "kein Build",
    "yes": "ja",
    "no": "nein",
    "protocol.pop3": "POP3",
    "protocol.imap4": "IMAP4",
}

_TABLES: dict[str, Mapping[str, str]] = {"en": _EN, "de": _DE}

_SHEET_NAME_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")


class Labels:
    """The words of one language."""

    def __init__(self, lang: str) -> None:
        if lang not in _TABLES:
            raise ConfigError(
                f"unknown report language {lang!r}", hint=f"use one of: {', '.join(LANGUAGES)}"
            )
        self.lang = lang
        self._table = _TABLES[lang]

    def __call__(self, key: str, **fields: object) -> str:
        """The text for `key`, with `{name}` fields filled in."""
        text = self._table[key]
        return text.format(**fields) if fields else text

    def word(self, group: str, value: str | None) -> str | None:
        """The translation of a scanner word (`group.value`); unknown values as given."""
        if value is None:
            return None
        return self._table.get(f"{group}.{value}", value)

    def sheet(self, key: str) -> str:
        """The sheet name for `key`, valid for Excel."""
        return clean_sheet_name(self._table[f"sheet.{key}"])


def clean_sheet_name(name: str) -> str:
    """A worksheet title Excel accepts: no []:*?/\\, not quoted at the ends, at most 31 chars."""
    cleaned = _SHEET_NAME_FORBIDDEN.sub("_", name).strip("'")[:31]
    return cleaned or "Sheet"


def label_keys(lang: str) -> frozenset[str]:
    """All keys a language defines (the languages must agree)."""
    return frozenset(_TABLES[lang])
