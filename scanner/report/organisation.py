"""The organisation view (`cas-audit report --as-of TIME|now`): every server as of a time.

Scans may be split by site over several scanners writing into one history. The view takes,
for every server the history knows, its latest successful observation that finished at or
before the time (from whichever run; a server never scanned successfully by then shows its
latest failed scan), flags it stale when it is older than `stale_days` (or never
succeeded), and lists the findings of each server's and site's last evaluation by a run
that finished by then. The exporters write it like a run's report, with "as of" in place
of the run (README.md, "Organisation view").
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from scanner import __version__
from scanner.judge.catalog import Catalog, load_catalog
from scanner.judge.not_evaluated import services_not_evaluated
from scanner.judge.policy import Policy
from scanner.report.findings import finding_info, waiver_infos
from scanner.report.model import AsOf, RunReport, ScopeEntry, ServerSource
from scanner.store.repo import Store
from scanner.util.timefmt import as_utc, day_text, utc_day

DEFAULT_STALE_DAYS = 7


def parse_as_of(value: str, now: datetime | None = None) -> datetime:
    """`now`, an ISO 8601 date (the end of that UTC day) or date and time (UTC when no offset)."""
    text = value.strip()
    if text.lower() == "now":
        return now or datetime.now(UTC)
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text).replace(tzinfo=UTC)
            if day.date() == date.max:
                return datetime.max.replace(tzinfo=UTC)  # the end of 9999-12-31
            return day + timedelta(days=1) - timedelta(microseconds=1)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither 'now' nor an ISO 8601 date or time such as 2026-12-01T08:00:00Z") from None
    try:
        return as_utc(moment)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise ValueError(f"{value} lies outside the years 1 to 9999 in UTC") from None


def stale_cutoff(as_of: datetime, stale_days: int) -> datetime:
    """When an observation becomes stale as of `as_of`; ValueError when that is before the
    year 1 (an --as-of or --stale-days no history can hold)."""
    try:
        return as_of - timedelta(days=stale_days)
    except OverflowError:
        raise ValueError(f"{stale_days} days before {day_text(as_of)} is before the year 1") from None


def build_organisation_report(
    store: Store,
    as_of: datetime,
    *,
    stale_days: int = DEFAULT_STALE_DAYS,
    lang: str = "en",
    catalog: Catalog | None = None,
) -> RunReport:
    """The organisation view as of `as_of` (aware), in `lang`."""
    catalog = catalog or load_catalog()
    cutoff = stale_cutoff(as_of, stale_days)
    latest = store.latest_observations(as_of)
    servers = tuple(obs for _run, obs in latest)
    sources = tuple(
        ServerSource(run_id=run_id, observed_at=obs.finished_at,
                     stale=obs.scan_status != "ok" or obs.finished_at < cutoff)
        for run_id, obs in latest
    )
    sites: dict[str, list[str]] = {}
    for obs in servers:
        if obs.site:
            sites.setdefault(obs.site.casefold(), []).append(obs.name)
    rows = store.last_evaluations(None, [obs.name for obs in servers], sites, finished_by=as_of)
    order = {obs.name.casefold(): i for i, obs in enumerate(servers)}
    rows.sort(key=lambda r: (r.rule, order.get((r.server_name or "").casefold(), len(order)),
                             (r.site or "").casefold(), r.protocol or "", r.run_id or 0))
    newest = store.run(max(s.run_id for s in sources)) if sources else None
    policy = (Policy.from_text(newest.policy_text, source="<policy stored with the run>")
              if newest is not None and newest.policy_text is not None else Policy.default())
    scope = tuple(
        ScopeEntry(name=obs.name, address=obs.address, site=obs.site, scan_status=obs.scan_status,
                   error_kind=obs.error_kind, error=obs.error)
        for obs in servers
    )
    return RunReport(
        run=None,
        lang=lang,
        servers=servers,
        scope=scope,
        findings=tuple(finding_info(row, catalog, lang) for row in rows),
        resolved=(),
        waivers=tuple(waiver_infos(policy, rows, utc_day(as_of))),
        rules=tuple(catalog.rule_infos(lang, policy.severity)),
        as_of=AsOf(
            time=as_of,
            stale_days=stale_days,
            sources=sources,
            tool_version=__version__,
            organisation=newest.organisation if newest is not None else None,
            finding_runs=tuple(row.run_id or 0 for row in rows),
        ),
        seal=_newest_seal(store, [source.run_id for source in sources] + [row.run_id or 0 for row in rows]),
        services_unread=tuple((s.name, p) for s in servers for p in services_not_evaluated(policy, s)),
    )


def _newest_seal(store: Store, run_ids: list[int]) -> str | None:
    """The seal of the newest run the view draws on: the chain up to it vouches for the rest."""
    drawn = [run_id for run_id in run_ids if run_id]
    return store.run_seal(max(drawn)) if drawn else None
