"""What a rule could not judge on a scanned server (never "fine", never "none").

XS-010 is not evaluated where the Application log could not be read
(`ServerObservation.events_error`). XS-013 is not evaluated for a protocol whose service
the policy requires disabled when the collector read no start mode for it (Win32_Service
not answered): an installed service of unknown start mode may be enabled. A service that
is not installed cannot run and is judged (no finding). The lifecycle neither resolves nor
carries an earlier finding of a rule not evaluated, and every report lists the gap with
its reason (scanner/report/notes.py).
"""

from __future__ import annotations

from scanner.facts import PROTOCOLS, Protocol
from scanner.judge.policy import Policy
from scanner.parse.observe import ServerObservation


def services_not_evaluated(policy: Policy, obs: ServerObservation) -> tuple[Protocol, ...]:
    """The protocols of a scanned server for which XS-013 was not evaluated."""
    if obs.scan_status != "ok":
        return ()  # XS-011 says it all
    site = obs.site or obs.inventory_site  # as checks.server_site: reported, else planned
    out: list[Protocol] = []
    for protocol in PROTOCOLS:
        p = obs.protocols.get(protocol)
        if p is not None and (p.service == "absent" or p.start_mode):
            continue  # not installed, or its start mode was read: judged
        if policy.service_baseline(obs.name, site, protocol).service == "disabled":
            out.append(protocol)
    return tuple(out)


def service_read_error(obs: ServerObservation) -> str | None:
    """Why no start mode was read: the collector's 'service' stage errors (None: it gave none)."""
    messages = list(dict.fromkeys(message for stage, message in obs.collector_errors if stage == "service"))
    return "; ".join(messages) or None
