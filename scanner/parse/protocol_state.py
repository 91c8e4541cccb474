"""One serializer of a protocol's state: what a scan found out about POP3 or IMAP4 on one
server, as JSON-ready values.

The history's protocol documents (store/documents.py), the rules' evidence (judge/checks.py)
and the JSON report (report/export_json.py) each write a view of the same state: each
names its keys, in its order (a contract: stored documents are keyed by their exact text,
and past reports regenerate byte for byte), and how it writes a time (`when`: the store
keeps the microseconds, reports write whole seconds). How each field is read from the
observation is written once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from scanner.parse.observe import ProtocolObservation, ReferenceObservation

When = Callable[[datetime | None], str | None]

_FIELDS: dict[str, Callable[[ProtocolObservation, When], Any]] = {
    "allow_cross_site": lambda p, when: p.allow_cross_site,
    "value_source": lambda p, when: p.value_source,
    "config_status": lambda p, when: p.config_status,
    "detail": lambda p, when: p.detail,  # why the value is unknown or the status not ok
    "config_detail": lambda p, when: p.detail,  # the same, as the JSON report names it
    "raw_value": lambda p, when: p.raw_value,
    "config_path": lambda p, when: p.config_path,
    "config_sha256": lambda p, when: p.config_sha256,
    "config_length": lambda p, when: p.config_length,
    "config_modified": lambda p, when: when(p.config_modified),
    "config_encoding": lambda p, when: p.config_encoding,
    "key_notes": lambda p, when: list(p.key_notes),
    "service": lambda p, when: p.service,
    "start_mode": lambda p, when: p.start_mode,
    "service_started": lambda p, when: when(p.service_started),
    "pending_restart": lambda p, when: p.pending_restart,
}

_REFERENCE_FIELDS: dict[str, Callable[[ReferenceObservation, When], Any]] = {
    "attribute": lambda r, when: r.attribute,
    "value": lambda r, when: r.value,
    "line": lambda r, when: r.line,
    "outcome": lambda r, when: r.outcome,
    "path": lambda r, when: r.path,
    "sha256": lambda r, when: r.sha256,
    "length": lambda r, when: r.length,
    "modified": lambda r, when: when(r.modified),
    "error": lambda r, when: r.error,
}

#: The history's protocol document (its text is its key: never reorder).
STORED: tuple[str, ...] = (
    "allow_cross_site", "value_source", "config_status", "raw_value", "config_path", "config_sha256",
    "config_length", "config_modified", "config_encoding", "key_notes", "service", "start_mode",
    "service_started", "pending_restart", "detail",
)
#: The rules' evidence of a protocol (stored in finding documents and shown in every report).
EVIDENCE: tuple[str, ...] = (
    "allow_cross_site", "value_source", "raw_value", "config_status", "config_sha256", "config_modified",
)
#: The JSON report's protocol (docs/contracts.md), before the keys that need the server.
REPORTED: tuple[str, ...] = (
    "allow_cross_site", "value_source", "config_status", "config_detail", "raw_value", "config_sha256",
    "config_modified", "service", "start_mode", "service_started", "pending_restart",
)
#: The file=/configSource= reference in the history, and in the JSON report.
REFERENCE_STORED: tuple[str, ...] = ("attribute", "value", "line", "outcome", "path", "sha256", "length",
                                     "modified", "error")
REFERENCE_REPORTED: tuple[str, ...] = ("attribute", "value", "outcome", "path", "sha256", "length", "modified",
                                       "error")


def protocol_state(p: ProtocolObservation, keys: tuple[str, ...], when: When) -> dict[str, Any]:
    """The view `keys` of the protocol's state, in that order; times written by `when`."""
    return {key: _FIELDS[key](p, when) for key in keys}


def reference_state(ref: ReferenceObservation | None, keys: tuple[str, ...], when: When) -> dict[str, Any] | None:
    """The view `keys` of a file=/configSource= reference (None when there is none)."""
    if ref is None:
        return None
    return {key: _REFERENCE_FIELDS[key](ref, when) for key in keys}
