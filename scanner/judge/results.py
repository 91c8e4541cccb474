"""What the judge concludes, as the reports show it: rules, findings and waivers.

These are the judge's own types: the report is built from them (`scanner.report.model`
imports them), never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scanner.facts import FindingState, WaiverState, is_active


@dataclass(frozen=True)
class Control:
    """A control of a framework that a rule serves (rules/catalog.toml), with how well it fits.

    `title` is the control's own title in its framework (not translated); `source` names the
    document and section it is taken from; `protocol` limits it to one protocol's findings
    (a STIG item written for IMAP4 only)."""

    framework: str  # facts.CONTROL_FRAMEWORKS
    id: str  # "CM-6", "4.8", "A.8.9", "V-33570"
    match: str  # facts.CONTROL_MATCHES: exact | closest
    title: str
    source: str
    url: str = ""
    protocol: str | None = None

    def applies_to(self, protocol: str | None) -> bool:
        """Whether the control belongs to a finding about `protocol` (None: a server or site)."""
        return self.protocol is None or protocol is None or self.protocol == protocol

    def as_json(self) -> dict[str, str]:
        """The control as the JSON report names it (docs/contracts.md): framework, id, match."""
        return {"framework": self.framework, "id": self.id, "match": self.match}

    @property
    def label(self) -> str:
        """One line for a cell or a listing: "NIST SP 800-53 CM-6 Configuration Settings"."""
        return f"{self.framework} {self.id} {self.title}"


@dataclass(frozen=True)
class RuleInfo:
    """A catalog entry as applied in this run (severity after policy overrides)."""

    id: str
    title: str
    severity: str
    default_severity: str
    rationale: str
    remediation: str
    references: tuple[str, ...] = ()
    controls: tuple[Control, ...] = ()  # the controls the rule serves, in catalog order


@dataclass(frozen=True)
class FindingInfo:
    """A finding with its texts rendered in one language."""

    rule: str
    title: str
    severity: str  # critical | high | medium | low | info (facts.Severity), after policy overrides
    state: FindingState
    server: str | None
    site: str | None
    protocol: str | None
    message: str  # the sentence that explains it, in the report's language
    remediation: str
    observed: str | None  # observed value, e.g. "true", "unknown", "8.1.240.6"
    expected: str | None  # baseline value, e.g. "false"
    first_seen_run: int | None
    first_seen_at: datetime | None
    evidence: dict[str, Any] = field(default_factory=dict)
    waiver: dict[str, Any] | None = None
    controls: tuple[Control, ...] = ()  # the rule's controls that apply to this finding's protocol

    @property
    def active(self) -> bool:
        return is_active(self.state)


@dataclass(frozen=True)
class WaiverInfo:
    """A waiver of the policy and its state on the run's day."""

    rule: str
    scope: str  # human text: "server CAS07", "site Hamburg / pop3"
    justification: str
    approver: str
    created: str | None
    expires: str | None
    state: WaiverState
