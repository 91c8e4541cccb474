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
class RuleInfo:
    """A catalog entry as applied in this run (severity after policy overrides)."""

    id: str
    title: str
    severity: str
    default_severity: str
    rationale: str
    remediation: str
    references: tuple[str, ...] = ()


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
