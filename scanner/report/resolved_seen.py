"""When each finding a run resolved was first seen, for the OCSF Close line whose
`finding_info.uid` must equal the one of the lines that reported the finding
(export_ocsf.finding_uid: rule, server, protocol, site for site findings, first seen).

The history keeps a resolved finding as (rule, server, protocol) only; the finding itself
is the row of the evaluation the run continued from (`Store.last_evaluations`, as
judge/evaluate.py reads it), which carries its first-seen time and, for a site finding
(no server), its site. Several site findings of one rule and protocol resolved in one run
are matched in the order the evaluation listed them. When that row is gone (the run was
pruned and the kept run's context predates this record), the time is None: the OCSF line
then says so (docs/contracts.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from scanner.judge.checks import server_site
from scanner.parse.observe import ServerObservation
from scanner.store.repo import Store
from scanner.store.runs import PlannedServer

__all__ = ["Seen", "resolved_first_seen"]

# per resolved finding, in the run's order: (site of a site finding, first seen), or None: unknown
Seen = tuple[str | None, datetime] | None


def resolved_first_seen(store: Store, run_id: int, planned: Sequence[PlannedServer],
                        servers: Sequence[ServerObservation],
                        resolved: Sequence[tuple[str, str | None, str | None]]) -> list[Seen]:
    """The first-seen time (and site of a site finding) of each finding run `run_id` resolved."""
    if not resolved:
        return []
    observed = {s.name.casefold(): s for s in servers}
    sites: dict[str, list[str]] = {}
    for p in planned:
        site = server_site(p, observed.get(p.name.casefold()))
        if site:
            sites.setdefault(site.casefold(), []).append(p.name)
    rows = store.last_evaluations(run_id, [p.name for p in planned], sites)
    current = {(f.rule, f.site.casefold() if f.site else None, f.protocol)
               for f in store.findings(run_id) if f.server_name is None}
    by_server = {(r.rule, r.server_name.casefold(), r.protocol): r for r in rows if r.server_name}
    site_rows = [r for r in rows if r.server_name is None
                 and (r.rule, r.site.casefold() if r.site else None, r.protocol) not in current]
    found: list[Seen] = []
    for rule, server, protocol in resolved:
        if server:
            row = by_server.get((rule, server.casefold(), protocol))
        else:
            row = next((r for r in site_rows if r.rule == rule and r.protocol == protocol), None)
            if row is not None:
                site_rows.remove(row)
        found.append(None if row is None or row.first_seen_at is None
                     else (row.site if row.server_name is None else None, row.first_seen_at))
    return found
