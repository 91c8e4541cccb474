"""The lifecycle of findings across runs: severities, waivers and states, without I/O.

`evaluate` runs `scanner.judge.checks` over inputs already read (`scanner.judge.evaluate`
reads them from the store) and returns the rows the caller saves with `Store.save_findings`.

Lifecycle, per server and protocol: against the findings each planned server had at its
own last evaluation (the newest earlier finished run, complete or partial, that had the
server in its scope; aborted runs saved none), and each site's at the last run that
judged the site. Runs of other sites in between change nothing: scanning site B, then A,
then B continues B's findings from B's first scan. `previous_findings` holds those rows
(each with the `run_id` it came from). A finding's identity is rule + server + protocol
(rule + site + protocol for site-level findings such as XS-009):
- new: not in the last evaluation; first seen now.
- persisting: in the last evaluation; first-seen run and time carried over. This holds for
  change rules too: a value that changes again in the next scan keeps XS-004 persisting.
- resolved: in the last evaluation, not now (returned as (rule, server, protocol)).
- waived: an active waiver of the policy covers it; still listed, with the waiver.
- waiver-expired: only expired waivers cover it: active again, and the message says so.
A server that could not be scanned in this run is not re-evaluated: XS-011 fires, and its
other findings of the previous run are carried over as they were (persisting, marked
`not_rescanned` in the evidence, severity and waivers re-applied): they neither vanish
nor resolve. Site-level findings (XS-009) are judged over the servers scanned in this
run. Findings of servers outside this run's planned scope (`scan --site`) are
neither listed, resolved nor re-dated.

Waivers are judged on the UTC date of the run's start unless `now` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from scanner.facts import FindingState
from scanner.judge.catalog import Catalog
from scanner.judge.checks import CheckInput, RawFinding, finding_key, run_checks, server_site
from scanner.judge.not_evaluated import restarts_not_evaluated, services_not_evaluated
from scanner.judge.policy import Policy, Waiver
from scanner.store.repo import FindingRow
from scanner.util.timefmt import utc_day


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` concluded for one run."""

    run_id: int
    previous_run_id: int | None
    findings: list[FindingRow]
    resolved: list[tuple[str, str | None, str | None]]  # (rule, server, protocol)


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
    day = utc_day(now or run_started_at)
    planned_names = {p.name.casefold() for p in inp.planned}
    unscanned = {
        p.name.casefold()
        for p in inp.planned
        if (obs := inp.observation(p.name)) is None or obs.scan_status != "ok"
    }
    # XS-010 is not evaluated where the Application log could not be read: its last
    # finding is neither resolved nor carried (the report says "not evaluated").
    log_unread = {
        p.name.casefold() for p in inp.planned if (obs := inp.observation(p.name)) is not None and
        obs.scan_status == "ok" and not obs.events_read
    }
    # XS-013 likewise for a protocol whose start mode was not read (judge/not_evaluated.py)
    service_unread = {
        (p.name.casefold(), protocol) for p in inp.planned if (obs := inp.observation(p.name)) is not None
        for protocol in services_not_evaluated(inp.policy, obs)
    }
    # XS-005 likewise for a protocol whose pending restart is unknown
    restart_unread = {
        (p.name.casefold(), protocol) for p in inp.planned if (obs := inp.observation(p.name)) is not None
        for protocol in restarts_not_evaluated(obs)
    }
    planned_sites = set()
    for p in inp.planned:
        site = server_site(p, inp.observation(p.name))
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
            if name in log_unread and row.rule == "XS-010":
                continue
            if row.rule == "XS-013" and (name, row.protocol) in service_unread:
                continue
            if row.rule == "XS-005" and (name, row.protocol) in restart_unread:
                continue
        elif (row.site or "").casefold() not in planned_sites:
            continue
        previous_by_key[finding_key(row.rule, row.server_name, row.site, row.protocol)] = row

    rows: list[FindingRow] = []
    current_keys = set()
    for raw in run_checks(inp):
        current_keys.add(raw.key)
        before = previous_by_key.get(raw.key)
        rows.append(_row(raw, before, inp.run_id, run_started_at, _origin(before, previous_run_id), policy, catalog,
                         lang, day))
    for row in carried:
        rows.append(_carry(row, _origin(row, previous_run_id), policy, catalog, lang, day))

    resolved = [
        (row.rule, row.server_name, row.protocol) for key, row in previous_by_key.items() if key not in current_keys
    ]
    order = {p.name.casefold(): i for i, p in enumerate(inp.planned)}
    rows.sort(key=lambda r: (r.rule, order.get((r.server_name or "").casefold(), len(order)), r.site or "", r.protocol or ""))
    return Evaluation(inp.run_id, previous_run_id, rows, resolved)


def _origin(row: FindingRow | None, previous_run_id: int | None) -> int | None:
    """The run a previous finding was saved with (rows read from the store know it)."""
    return row.run_id if row is not None and row.run_id is not None else previous_run_id


def _waiver_state(
    policy: Policy, rule: str, server: str | None, site: str | None, protocol: str | None, day: date
) -> tuple[FindingState | None, dict[str, Any] | None]:
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
    state: FindingState
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
        message=catalog.finding_message(raw.rule, raw.fields, lang, state=state, waiver=waiver, not_rescanned=None),
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
        message = catalog.finding_message(
            row.rule, fields, lang, state=state, waiver=waiver, not_rescanned=evidence["not_rescanned"]
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
        run_id=None,
    )
