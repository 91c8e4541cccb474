"""A stored finding and the policy's waivers as report data, in the report's language.

Texts are rendered again from the fields stored with each finding, so one run reads in
English or German, and a past run's report regenerated later says the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from scanner.facts import WaiverState
from scanner.judge.catalog import Catalog
from scanner.judge.policy import Policy
from scanner.judge.results import FindingInfo, WaiverInfo
from scanner.report.reasons import reason_text
from scanner.store.repo import FindingRow
from scanner.util.timefmt import day_iso

_INTERNAL_EVIDENCE = ("fields",)


def finding_info(row: FindingRow, catalog: Catalog, lang: str = "en") -> FindingInfo:
    """A stored finding as report data, its texts rendered in `lang` from the stored fields."""
    evidence = dict(row.evidence or {})
    fields = evidence.get("fields")
    if isinstance(fields, dict) and row.rule in catalog:
        if isinstance(fields.get("detail"), str):  # our reason sentence, in the report's language
            fields = {**fields, "detail": reason_text(fields["detail"], lang)}
        message = catalog.finding_message(
            row.rule, fields, lang, state=row.state, waiver=row.waiver,
            not_rescanned=evidence.get("not_rescanned"),
        )
        remediation = catalog.remediation(row.rule, fields, lang)
        title = catalog.title(row.rule, lang)
    else:  # a row written without fields: show it as stored
        message = row.message
        remediation = catalog.remediation(row.rule, None, lang) if row.rule in catalog else ""
        title = catalog.title(row.rule, lang) if row.rule in catalog else row.rule
    for key in _INTERNAL_EVIDENCE:
        evidence.pop(key, None)
    return FindingInfo(
        rule=row.rule,
        title=title,
        severity=row.severity,
        state=row.state,
        server=row.server_name,
        site=row.site,
        protocol=row.protocol,
        message=message,
        remediation=remediation,
        observed=evidence.get("observed"),
        expected=evidence.get("expected"),
        first_seen_run=row.first_seen_run_id,
        first_seen_at=row.first_seen_at,
        evidence=evidence,
        waiver=row.waiver,
        controls=catalog.controls(row.rule, row.protocol) if row.rule in catalog else (),
    )


def waiver_infos(policy: Policy, findings: Iterable[FindingRow], day: date) -> list[WaiverInfo]:
    """Every waiver of the policy with its state on `day`: active (used), unused or expired."""
    used = {
        (row.waiver.get("rule"), row.waiver.get("scope"), row.waiver.get("expires"))
        for row in findings
        if row.waiver
    }
    infos = []
    for w in policy.waivers:
        state: WaiverState
        if w.expired_on(day):
            state = "expired"
        elif (w.rule, w.scope, day_iso(w.expires)) in used:
            state = "active"
        else:
            state = "unused"
        infos.append(
            WaiverInfo(
                rule=w.rule,
                scope=w.scope,
                justification=w.justification,
                approver=w.approver,
                created=day_iso(w.created) if w.created else None,
                expires=day_iso(w.expires),
                state=state,
            )
        )
    return infos
