"""Findings of one run: checks, severity overrides, waivers and the lifecycle across runs.

`evaluate_run` reads a run's inputs from the store, runs `scanner.judge.checks`, and returns
the rows the caller saves with `Store.save_findings`. `evaluate` is the same without the
store, for tests and tools that hold the inputs already.

Lifecycle, against the findings saved for the previous finished run (the newest earlier
run with status complete or partial; aborted runs saved none). A finding's identity is
rule + server + protocol (rule + site + protocol for site-level findings such as XS-009):
- new: not in the previous run; first seen now.
- persisting: in the previous run; first-seen run and time carried over. This holds for
  change rules too: a value that changes again in the next scan keeps XS-004 persisting.
- resolved: in the previous run, not now (returned as (rule, server, protocol)).
- waived: an active waiver of the policy covers it; still listed, with the waiver.
- waiver-expired: only expired waivers cover it: active again, and the message says so.
A server that could not be scanned in this run is not re-evaluated: XS-011 fires, and its
other findings of the previous run are carried over as they were (persisting, marked
`not_rescanned` in the evidence, severity and waivers re-applied): they neither vanish
nor resolve. Site-level findings (XS-009) are judged over the servers scanned in this
run. Findings of servers outside this run's planned scope (`scan --site`) are
neither listed nor resolved.

Waivers are judged on the UTC date of the run's start unless `now` is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Protocol

from scanner.judge.catalog import SEVERITIES, Catalog
from scanner.judge.checks import (
    CheckInput,
    Planned,
    Previous,
    RawFinding,
    finding_key,
    run_checks,
)
from scanner.judge.policy import Policy, Waiver
from scanner.report.model import FindingInfo, WaiverInfo
from scanner.store.repo import FindingRow, Store

FINISHED_STATUSES: tuple[str, ...] = ("complete", "partial")
_INTERNAL_EVIDENCE = ("fields",)


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` concluded for one run."""

    run_id: int
    previous_run_id: int | None
    findings: list[FindingRow]
    resolved: list[tuple[str, str | None, str | None]]  # (rule, server, protocol)
    resolved_sites: list[str | None] = field(default_factory=list)  # site of each resolved entry


class _Rated(Protocol):
    @property
    def severity(self) -> str: ...

    @property
    def state(self) -> str: ...


def severity_rank(severity: str) -> int:
    """critical 4 ... info 0 (unknown severities rank as info)."""
    return len(SEVERITIES) - 1 - SEVERITIES.index(severity) if severity in SEVERITIES else 0


def active_at_or_above(findings: Iterable[_Rated], severity: str) -> list[Any]:
    """Findings that are not waived and at least as severe as `severity` (for `--fail-on`)."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}")
    floor = severity_rank(severity)
    return [f for f in findings if f.state != "waived" and severity_rank(f.severity) >= floor]


# -- message composition (shared by evaluation and report regeneration) -------------------


def compose_message(
    catalog: Catalog,
    rule: str,
    fields: Mapping[str, Any],
    lang: str,
    *,
    state: str,
    waiver: Mapping[str, Any] | None,
    not_rescanned: Mapping[str, Any] | None,
) -> str:
    """The finding's sentence plus what the waiver and a missed scan add to it."""
    parts = [catalog.message(rule, fields, lang)]
    if not_rescanned:
        parts.append(catalog.sentence("not_rescanned", {**fields, **not_rescanned}, lang))
    if waiver and state == "waived":
        parts.append(catalog.sentence("waived", waiver, lang))
    elif waiver and state == "waiver-expired":
        parts.append(catalog.sentence("waiver_expired", waiver, lang))
    return " ".join(parts)


def finding_info(row: FindingRow, catalog: Catalog, lang: str = "en") -> FindingInfo:
    """A stored finding as report data, its texts rendered in `lang` from the stored fields."""
    evidence = dict(row.evidence or {})
    fields = evidence.get("fields")
    if isinstance(fields, dict) and row.rule in catalog:
        message = compose_message(
            catalog, row.rule, fields, lang, state=row.state, waiver=row.waiver,
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
        if w.expired_on(day):
            state = "expired"
        elif (w.rule, w.scope, w.expires.isoformat()) in used:
            state = "active"
        else:
            state = "unused"
        infos.append(
            WaiverInfo(
                rule=w.rule,
                scope=w.scope,
                justification=w.justification,
                approver=w.approver,
                created=w.created.isoformat() if w.created else None,
                expires=w.expires.isoformat(),
                state=state,
            )
        )
    return infos


# -- evaluation ---------------------------------------------------------------------------


def evaluate(
    inp: CheckInput,
    policy: Policy,
    catalog: Catalog,
    *,
    run_started_at: datetime,
    previous_run_id: int | None,
    previous_findings: Sequence[FindingRow],
    lang: str = "en",
    now: datetime | None = None,
) -> Evaluation:
    """Findings of run `inp.run_id` with severities, waivers and states (no I/O)."""
    day = _utc_day(now or run_started_at)
    planned_names = {p.name.casefold() for p in inp.planned}
    unscanned = {
        p.name.casefold()
        for p in inp.planned
        if (obs := inp.observation(p.name)) is None or obs.scan_status != "ok"
    }
    planned_sites = set()
    for p in inp.planned:
        obs = inp.observation(p.name)
        site = (obs.site if obs is not None and obs.site else None) or p.site
        if site:
            planned_sites.add(site.casefold())

    previous_by_key: dict[tuple[str, str, str, str], FindingRow] = {}
    carried: list[FindingRow] = []
    for row in previous_findings:
        if row.server_name:
            name = row.server_name.casefold()
            if name not in planned_names:
                continue  # out of this run's scope
            if name in unscanned and row.rule != "XS-011":
                carried.append(row)
                continue
        elif (row.site or "").casefold() not in planned_sites:
            continue
        previous_by_key[finding_key(row.rule, row.server_name, row.site, row.protocol)] = row

    rows: list[FindingRow] = []
    current_keys = set()
    for raw in run_checks(inp):
        current_keys.add(raw.key)
        before = previous_by_key.get(raw.key)
        rows.append(_row(raw, before, inp.run_id, run_started_at, previous_run_id, policy, catalog, lang, day))
    for row in carried:
        rows.append(_carry(row, previous_run_id, policy, catalog, lang, day))

    resolved = []
    resolved_sites = []
    for key, row in previous_by_key.items():
        if key not in current_keys:
            resolved.append((row.rule, row.server_name, row.protocol))
            resolved_sites.append(row.site)
    order = {p.name.casefold(): i for i, p in enumerate(inp.planned)}
    rows.sort(key=lambda r: (r.rule, order.get((r.server_name or "").casefold(), len(order)), r.site or "", r.protocol or ""))
    return Evaluation(inp.run_id, previous_run_id, rows, resolved, resolved_sites)


def _utc_day(moment: datetime) -> date:
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UTC).date()


def _waiver_state(
    policy: Policy, rule: str, server: str | None, site: str | None, protocol: str | None, day: date
) -> tuple[str | None, dict[str, Any] | None]:
    waiver: Waiver | None = policy.waiver_for(rule, server, site, protocol, day)
    if waiver is None:
        return None, None
    return ("waiver-expired" if waiver.expired_on(day) else "waived"), waiver.as_json(day)


def _row(
    raw: RawFinding,
    before: FindingRow | None,
    run_id: int,
    run_started_at: datetime,
    previous_run_id: int | None,
    policy: Policy,
    catalog: Catalog,
    lang: str,
    day: date,
) -> FindingRow:
    severity = policy.severity_for(raw.rule, catalog.rule(raw.rule).severity)
    waiver_state, waiver = _waiver_state(policy, raw.rule, raw.server, raw.site, raw.protocol, day)
    if before is not None:
        state = "persisting"
        first_run = before.first_seen_run_id if before.first_seen_run_id is not None else previous_run_id
        first_at = before.first_seen_at
    else:
        state, first_run, first_at = "new", run_id, run_started_at
    state = waiver_state or state
    evidence = {**raw.evidence, "observed": raw.observed, "expected": raw.expected, "fields": dict(raw.fields)}
    return FindingRow(
        rule=raw.rule,
        severity=severity,
        state=state,
        server_name=raw.server,
        site=raw.site,
        protocol=raw.protocol,
        message=compose_message(catalog, raw.rule, raw.fields, lang, state=state, waiver=waiver, not_rescanned=None),
        evidence=evidence,
        first_seen_run_id=first_run,
        first_seen_at=first_at,
        waiver=waiver,
    )


def _carry(
    row: FindingRow, previous_run_id: int | None, policy: Policy, catalog: Catalog, lang: str, day: date
) -> FindingRow:
    """A finding of a server not scanned in this run, as it was last evaluated."""
    evidence = dict(row.evidence or {})
    earlier = evidence.get("not_rescanned") or {}
    as_of = earlier.get("as_of_run") or previous_run_id
    evidence["not_rescanned"] = {"as_of_run": as_of}
    default = catalog.rule(row.rule).severity if row.rule in catalog else row.severity
    severity = policy.severity_for(row.rule, default)
    waiver_state, waiver = _waiver_state(policy, row.rule, row.server_name, row.site, row.protocol, day)
    state = waiver_state or "persisting"
    fields = evidence.get("fields")
    if isinstance(fields, dict) and row.rule in catalog:
        message = compose_message(
            catalog, row.rule, fields, lang, state=state, waiver=waiver, not_rescanned=evidence["not_rescanned"]
        )
    else:
        message = row.message
    return replace(
        row,
        severity=severity,
        state=state,
        message=message,
        evidence=evidence,
        first_seen_run_id=row.first_seen_run_id if row.first_seen_run_id is not None else previous_run_id,
        waiver=waiver,
        id=None,
    )


# -- reading the inputs from the store ----------------------------------------------------


def previous_run_id(store: Store, run_id: int) -> int | None:
    """The newest run before `run_id` that finished (complete or partial) and so has findings."""
    for run in store.runs():
        if run.id < run_id and run.status in FINISHED_STATUSES:
            return run.id
    return None


def gather_inputs(store: Store, run_id: int, policy: Policy) -> tuple[CheckInput, datetime]:
    """The check inputs of a run, and the run's start time."""
    run = store.run(run_id)
    planned = [Planned(p.name, p.address, p.inventory_site) for p in store.planned_servers(run_id)]
    current = {obs.name.casefold(): obs for obs in store.server_observations(run_id)}
    previous: dict[tuple[str, str], Previous] = {}
    for p in planned:
        obs = current.get(p.name.casefold())
        if obs is None or obs.scan_status != "ok":
            continue
        for protocol in obs.protocols:  # one indexed query each, never the whole history
            found = store.previous_successful(p.name, protocol, run_id)
            if found is not None:
                before_run, before = found
                previous[(p.name.casefold(), protocol)] = Previous(before_run, before, before.protocols[protocol])
    inp = CheckInput(
        run_id=run_id, run_at=run.started_at, planned=planned, current=current, previous=previous, policy=policy
    )
    return inp, run.started_at


def evaluate_run(
    store: Store,
    run_id: int,
    policy: Policy,
    catalog: Catalog,
    *,
    lang: str = "en",
    now: datetime | None = None,
) -> Evaluation:
    """Evaluate a stored run against its history; the caller saves the result."""
    inp, started_at = gather_inputs(store, run_id, policy)
    prev_id = previous_run_id(store, run_id)
    previous = store.findings(prev_id) if prev_id is not None else []
    return evaluate(
        inp, policy, catalog, run_started_at=started_at, previous_run_id=prev_id,
        previous_findings=previous, lang=lang, now=now,
    )
