"""What a rule could not judge on a scanned server (never "fine", never "none").

XS-010 is not evaluated where the Application log could not be read
(`ServerObservation.events_error`). XS-013 is not evaluated for a protocol whose service
the policy requires disabled when the collector read no start mode for it (Win32_Service
not answered): an installed service of unknown start mode may be enabled. A service that
is not installed cannot run and is judged (no finding). XS-005 is not evaluated for a
protocol whose pending restart is unknown (`ProtocolObservation.pending_restart` None: the
service runs, but its start time or its file's last write time was not read). The lifecycle neither resolves nor
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


def restarts_not_evaluated(obs: ServerObservation) -> tuple[Protocol, ...]:
    """The protocols of a scanned server for which XS-005 was not evaluated."""
    if obs.scan_status != "ok":
        return ()
    return tuple(p for p in PROTOCOLS if p in obs.protocols and obs.protocols[p].pending_restart is None)


def restart_read_error(obs: ServerObservation, protocol: str) -> tuple[str, str | None]:
    """Which time XS-005 lacks on `protocol` ("service": the service's start time, else
    "config": a file's last write time) and the collector's errors of that stage (None: it
    gave none)."""
    p = obs.protocols.get(protocol)
    stage = "service" if p is None or p.service_started is None else "config"
    messages = list(dict.fromkeys(message for s, message in obs.collector_errors if s == stage))
    return stage, "; ".join(messages) or None
