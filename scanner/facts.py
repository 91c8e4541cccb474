"""Facts of the domain that every stage may read, each defined once.

Severities, protocols and rule ids are contracts (docs/contracts.md):
reports, exit codes and policy files name them. This module imports nothing of ours.

Every closed set of words the scanner writes (a run's status, a server scan's status, a
config file's status, why a server was not scanned, how the collector was launched, the
protocols, the report languages) is a `Literal` type here, with the tuple of its values
beside it (style.md #13: a vocabulary is a type). Code that writes or compares one of
these words is checked by mypy against the type (a misspelt "complet" does not type
check), click's `Choice`s are built from the tuples, and tests/test_vocabulary.py fails
if a tuple and its type drift apart.
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

_W = TypeVar("_W", bound=str)

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)  # most severe first

Protocol = Literal["pop3", "imap4"]  # the two CAS services with the key
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)

Language = Literal["en", "de"]  # the languages of the reports (report/labels.py)
LANGUAGES: tuple[Language, ...] = get_args(Language)

RULE_IDS: tuple[str, ...] = tuple(f"XS-{n:03d}" for n in range(1, 14))  # XS-001..XS-013

#: A scan run: running until it ends; complete (every server scanned), partial (some not),
#: aborted (it stopped, or another command found it without a heartbeat).
RunStatus = Literal["running", "complete", "partial", "aborted"]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
FinishedStatus = Literal["complete", "partial"]  # runs that saved findings
FINISHED_STATUSES: tuple[FinishedStatus, ...] = get_args(FinishedStatus)

#: One server in one scan: scanned, or not (with an `ErrorKind`).
ScanStatus = Literal["ok", "error"]
SCAN_STATUSES: tuple[ScanStatus, ...] = get_args(ScanStatus)

#: A planned server in a run's report: its scan's status, or not-scanned (the run ended
#: before its turn); in a comparison of two runs, absent (not planned in that run).
ScopeStatus = Literal[ScanStatus, "not-scanned"]
SCOPE_STATUSES: tuple[ScopeStatus, ...] = get_args(ScopeStatus)
DiffStatus = Literal[ScanStatus, "absent"]
DIFF_STATUSES: tuple[DiffStatus, ...] = get_args(DiffStatus)

#: Why a server was not scanned, in one word (scanner.errors.CollectionError.kind);
#: not-scanned: the run ended before the server's turn (reports of an aborted run).
ErrorKind = Literal[
    "refused", "timeout", "reset", "auth", "tls", "soap-fault", "protocol", "output", "script-error",
    "internal", "interrupted", "not-scanned",
]
ERROR_KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)

#: A protocol's config file as read (parse/configfile.py): ok, or why its value is unknown
#: (missing, unreadable, malformed) or unusable (invalid-value).
ConfigStatus = Literal["ok", "missing", "malformed", "invalid-value", "unreadable"]
CONFIG_STATUSES: tuple[ConfigStatus, ...] = get_args(ConfigStatus)
#: The statuses whose value is unknown or unusable (XS-006).
BadConfigStatus = Literal["missing", "malformed", "invalid-value", "unreadable"]
BAD_CONFIG_STATUSES: tuple[BadConfigStatus, ...] = get_args(BadConfigStatus)
#: Where a protocol's value comes from: the key in force in the file, or .NET's default (false).
ValueSource = Literal["file", "default"]
VALUE_SOURCES: tuple[ValueSource, ...] = get_args(ValueSource)

#: What became of an appSettings file=/configSource= reference: applied, absent (a missing
#: file= target, which .NET ignores), unknown (not read), refused (.NET refuses it).
ReferenceOutcome = Literal["applied", "absent", "unknown", "refused"]
REFERENCE_OUTCOMES: tuple[ReferenceOutcome, ...] = get_args(ReferenceOutcome)

#: How the collector reaches PowerShell (scanner/collect/__init__.py): in an environment
#: variable of the shell, or on stdin.
LaunchMethod = Literal["env", "stdin"]
LAUNCH_METHODS: tuple[LaunchMethod, ...] = get_args(LaunchMethod)

#: What a scan did not establish about a server, or where the inventory's site is not the
#: server's (report/notes.py), and why a list of
#: events 1008 is a lower bound: the collector's maximum count, or its time window.
NoteKind = Literal["not-evaluated", "lower-bound", "collector-error", "site-differs"]
NOTE_KINDS: tuple[NoteKind, ...] = get_args(NoteKind)
TruncationReason = Literal["max", "window"]
TRUNCATION_REASONS: tuple[TruncationReason, ...] = get_args(TruncationReason)

#: What a policy asks of a protocol's service ([baseline] pop3_service / imap4_service): any
#: start mode (the protocol may be used), or disabled (the protocol is not used: XS-013).
ServicePolicy = Literal["any", "disabled"]
SERVICE_POLICIES: tuple[ServicePolicy, ...] = get_args(ServicePolicy)

#: The frameworks whose controls the rule catalog names (rules/catalog.toml [framework.*]).
ControlFramework = Literal["NIST SP 800-53", "CIS Controls v8", "ISO/IEC 27001:2022", "DISA STIG"]
CONTROL_FRAMEWORKS: tuple[ControlFramework, ...] = get_args(ControlFramework)
#: How a control fits a rule: exact (the control asks for what the rule checks) or closest
#: (the nearest control that exists; the rule serves part of it, or a neighbouring product's).
ControlMatch = Literal["exact", "closest"]
CONTROL_MATCHES: tuple[ControlMatch, ...] = get_args(ControlMatch)

#: The command line's output formats (click's choices are built from these tuples):
#: `report --format` (scanner/report/write.py renders each), `preflight --format` (a table for
#: people, the JSON document for scripts) and `--log-format`.
ReportFormat = Literal["xlsx", "json", "csv", "ocsf", "html"]
REPORT_FORMATS: tuple[ReportFormat, ...] = get_args(ReportFormat)
PreflightFormat = Literal["table", "json"]
PREFLIGHT_FORMATS: tuple[PreflightFormat, ...] = get_args(PreflightFormat)
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)


def word(values: tuple[_W, ...], text: object) -> _W:
    """`text` as a member of the vocabulary `values` (e.g. a status read back from the
    history); ValueError names the word and the vocabulary when it is not one of them."""
    for value in values:
        if value == text:
            return value
    raise ValueError(f"{text!r} is not one of {', '.join(values)}")


def severity_rank(severity: str) -> int:
    """critical 4 ... info 0 (an unknown severity ranks as info)."""
    return len(SEVERITIES) - 1 - SEVERITIES.index(severity) if severity in SEVERITIES else 0


#: A finding's state in a run: new, persisting (seen before), waived, waiver-expired (its
#: waiver ended: active again).
FindingState = Literal["new", "persisting", "waived", "waiver-expired"]
FINDING_STATES: tuple[FindingState, ...] = get_args(FindingState)
InactiveState = Literal["waived"]  # finding states that do not count
INACTIVE_STATES: tuple[InactiveState, ...] = get_args(InactiveState)
#: A waiver of the policy in a run's report: in force, expired, or matching no finding.
WaiverState = Literal["active", "expired", "unused"]
WAIVER_STATES: tuple[WaiverState, ...] = get_args(WaiverState)


def is_active(state: str) -> bool:
    """Whether a finding in `state` counts (for --fail-on, summaries, trends): every state but
    waived. A finding whose waiver expired is active again."""
    return state not in INACTIVE_STATES
