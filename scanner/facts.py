"""Facts of the domain that every stage may read, each defined once.

Severities, protocols and rule ids are contracts (docs/contracts.md):
reports, exit codes and policy files name them. This module imports nothing of ours.
"""

from __future__ import annotations

SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")  # most severe first
PROTOCOLS: tuple[str, ...] = ("pop3", "imap4")  # the two CAS services with the key
RULE_IDS: tuple[str, ...] = tuple(f"XS-{n:03d}" for n in range(1, 13))  # XS-001..XS-012


def severity_rank(severity: str) -> int:
    """critical 4 ... info 0 (an unknown severity ranks as info)."""
    return len(SEVERITIES) - 1 - SEVERITIES.index(severity) if severity in SEVERITIES else 0


INACTIVE_STATES: tuple[str, ...] = ("waived",)  # finding states that do not count


def is_active(state: str) -> bool:
    """Whether a finding in `state` counts (for --fail-on, summaries, trends): every state but
    waived. A finding whose waiver expired is active again."""
    return state not in INACTIVE_STATES
