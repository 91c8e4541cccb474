"""The rule logic of the catalog XS-001..XS-013: pure functions, no I/O.

Each check reads a `CheckInput` (this run's planned servers and observations, each
server's last successful observation from an earlier run, the policy) and returns raw
findings. `CHECKS` maps every rule id to its check and to the template fields its
findings provide; the catalog is validated against it.

Decisions worth knowing:
- A server that failed this run (or was not scanned) yields only XS-011; its other
  findings are carried by `evaluate` from the previous run, unchanged.
- Changes (XS-003/004) compare this observation with the last *successful* earlier one,
  so failed scans in between neither hide nor invent a change. An unknown value on
  either side is no change (XS-006 reports it). The effective value is what counts: a
  removed key and `value="false"` both give false, so switching between them is no change.
- The build "changed" when both builds are known and differ; an unknown build on either
  side cannot explain a change, which is then XS-004. Nor is it XS-004 when a recorded
  change (`fix apply`/`fix rollback`) wrote the file the scan found (`CheckInput.explained`,
  judge/explained.py).
- XS-008/XS-009 are not reported when every value involved is exactly what the policy
  asks for (the policy itself wants them to differ).
- XS-013 judges a service only where its start mode was read: an unknown start mode is not
  evaluated (never "fine"); a service that is not installed cannot run and is no finding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scanner.collect.collected import (
    CONFIG_FILE_NAMES,
    SERVICE_DISPLAY_NAMES,
    SERVICE_NAMES,
)
from scanner.facts import BAD_CONFIG_STATUSES, PROTOCOLS
from scanner.judge.policy import Policy
from scanner.parse.builds import sp3_build
from scanner.parse.configfile import value_text
from scanner.parse.observe import ProtocolObservation, ServerObservation
from scanner.parse.protocol_state import EVIDENCE, protocol_state
from scanner.store.changes import ChangeRecord
from scanner.store.repo import PlannedServer
from scanner.util.timefmt import day_text, iso

# Fields every finding can use in its message and remediation templates.
COMMON_FIELDS: frozenset[str] = frozenset(
    {
        "server",
        "site",
        "protocol",
        "protocol_name",
        "install_path",
        "config_path",
        "config_file",
        "service_display",
        "service_name",
    }
)
PROTOCOL_NAMES: dict[str, str] = {"pop3": "POP3", "imap4": "IMAP4"}
MAX_LISTED = 10  # users, sites, servers named in a message before "+N more"
MAX_EVENTS_IN_EVIDENCE = 200
MAX_TEXT = 256  # characters kept of a user or site name from a server


@dataclass(frozen=True)
class Previous:
    """The last successful observation of a server/protocol before this run."""

    run_id: int
    server: ServerObservation
    protocol: ProtocolObservation


@dataclass(frozen=True)
class CheckInput:
    """Everything the rules read; built by `evaluate` from the store (or by hand in tests)."""

    run_id: int
    run_at: datetime
    planned: Sequence[PlannedServer]
    current: Mapping[str, ServerObservation]  # by casefolded server name
    previous: Mapping[tuple[str, str], Previous]  # by (casefolded server name, protocol)
    policy: Policy
    # the recorded change (fix apply / fix rollback) that wrote the file this scan found,
    # where the value changed since the previous scan: XS-004 is then no unexplained change
    explained: Mapping[tuple[str, str], ChangeRecord] = field(default_factory=dict)

    def observation(self, name: str) -> ServerObservation | None:
        return self.current.get(name.casefold())

    def scanned(self) -> list[tuple[PlannedServer, ServerObservation]]:
        """Planned servers scanned successfully in this run, in inventory order."""
        result = []
        for planned in self.planned:
            obs = self.observation(planned.name)
            if obs is not None and obs.scan_status == "ok":
                result.append((planned, obs))
        return result


@dataclass(frozen=True)
class RawFinding:
    """What a check concluded, before severity overrides, waivers and lifecycle."""

    rule: str
    server: str | None
    site: str | None
    protocol: str | None
    fields: dict[str, str | None]  # template fields; None = not known (generic wording)
    evidence: dict[str, Any]  # JSON-ready
    observed: str | None = None
    expected: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return finding_key(self.rule, self.server, self.site, self.protocol)


def finding_key(rule: str, server: str | None, site: str | None, protocol: str | None) -> tuple[str, str, str, str]:
    """Identity of a finding across runs: rule, server and protocol (site for site-level findings)."""
    return (
        rule,
        server.casefold() if server else "",
        protocol or "",
        (site or "").casefold() if not server else "",
    )


@dataclass(frozen=True)
class Check:
    rule: str
    fields: frozenset[str]  # template fields beyond COMMON_FIELDS
    run: Callable[[CheckInput], list[RawFinding]] = field(compare=False)


# -- helpers -----------------------------------------------------------------------------


def build_changed(before: ServerObservation, after: ServerObservation) -> bool:
    """Whether the Exchange build differs between two observations (both must be known)."""
    return bool(before.build and after.build and before.build != after.build)


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown if len(items) <= MAX_LISTED else f"{shown} (+{len(items) - MAX_LISTED})"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def common_fields(
    server: str | None, site: str | None, obs: ServerObservation | None, protocol: str | None
) -> dict[str, str | None]:
    """The fields every finding has; protocol-specific ones stay None without a protocol."""
    proto = obs.protocols.get(protocol) if (obs is not None and protocol) else None
    install_path = obs.install_path if obs is not None else None
    config_path = proto.config_path if proto is not None and proto.config_path else None
    if config_path is None and protocol and install_path:
        config_path = install_path.rstrip("\\") + "\\ClientAccess\\PopImap\\" + CONFIG_FILE_NAMES[protocol]
    return {
        "server": server,
        "site": site if site or not server else "?",
        "protocol": protocol,
        "protocol_name": PROTOCOL_NAMES.get(protocol or ""),
        "install_path": install_path.rstrip("\\") if install_path else None,
        "config_path": config_path,
        "config_file": CONFIG_FILE_NAMES.get(protocol or ""),
        "service_display": SERVICE_DISPLAY_NAMES.get(protocol or ""),
        "service_name": SERVICE_NAMES.get(protocol or ""),
    }


def server_site(planned: PlannedServer, obs: ServerObservation | None) -> str | None:
    """The server's AD site: as it reported it this run, else as the inventory names it."""
    return (obs.site if obs is not None and obs.site else None) or planned.inventory_site


def _protocols(obs: ServerObservation) -> list[tuple[str, ProtocolObservation]]:
    return [(p, obs.protocols[p]) for p in PROTOCOLS if p in obs.protocols]


def _state(p: ProtocolObservation) -> dict[str, Any]:
    return protocol_state(p, EVIDENCE, iso)


# -- XS-001 / XS-002: baseline ---------------------------------------------------------


def _baseline_check(rule: str, finds: bool) -> Callable[[CheckInput], list[RawFinding]]:
    def check(inp: CheckInput) -> list[RawFinding]:
        out = []
        for planned, obs in inp.scanned():
            site = server_site(planned, obs)
            for protocol, p in _protocols(obs):
                if p.allow_cross_site is None:
                    continue
                wanted = inp.policy.baseline(planned.name, site, protocol)
                if p.allow_cross_site != finds or wanted.allow_cross_site == finds:
                    continue
                fields = common_fields(planned.name, site, obs, protocol)
                fields.update(
                    observed=value_text(p.allow_cross_site),
                    expected=value_text(wanted.allow_cross_site),
                    value_source=p.value_source,
                    raw_value=p.raw_value,
                    baseline_scope=wanted.source,
                )
                evidence = {
                    **_state(p),
                    "baseline": wanted.allow_cross_site,
                    "baseline_scope": wanted.source,
                    "pending_restart": p.pending_restart,
                }
                out.append(
                    RawFinding(
                        rule, planned.name, site, protocol, fields, evidence,
                        observed=value_text(p.allow_cross_site), expected=value_text(wanted.allow_cross_site),
                    )
                )
        return out

    return check


# -- XS-003 / XS-004: changes between consecutive successful observations --------------


def _change_check(rule: str, upgrade: bool) -> Callable[[CheckInput], list[RawFinding]]:
    def check(inp: CheckInput) -> list[RawFinding]:
        out = []
        for planned, obs in inp.scanned():
            site = server_site(planned, obs)
            for protocol, p in _protocols(obs):
                prev = inp.previous.get((planned.name.casefold(), protocol))
                if prev is None or prev.run_id >= inp.run_id:
                    continue
                before, after = prev.protocol.allow_cross_site, p.allow_cross_site
                if before is None or after is None or before == after:
                    continue
                changed = build_changed(prev.server, obs)
                if changed != upgrade:
                    continue
                if not upgrade and (planned.name.casefold(), protocol) in inp.explained:
                    continue  # a recorded change wrote the file found: explained
                fields = common_fields(planned.name, site, obs, protocol)
                fields.update(
                    before=value_text(before),
                    after=value_text(after),
                    build_before=prev.server.build,
                    build_after=obs.build,
                    build=obs.build,
                    run_before=str(prev.run_id),
                    run_after=str(inp.run_id),
                    date_before=day_text(prev.server.finished_at),
                    date_after=day_text(obs.finished_at),
                )
                evidence = {
                    "before": {
                        "run": prev.run_id,
                        "scanned_at": iso(prev.server.finished_at),
                        "build": prev.server.build,
                        "service_pack": prev.server.service_pack,
                        **_state(prev.protocol),
                    },
                    "after": {
                        "run": inp.run_id,
                        "scanned_at": iso(obs.finished_at),
                        "build": obs.build,
                        "service_pack": obs.service_pack,
                        **_state(p),
                    },
                    "build_changed": changed,
                }
                out.append(
                    RawFinding(
                        rule, planned.name, site, protocol, fields, evidence,
                        observed=value_text(after), expected=value_text(before),
                    )
                )
        return out

    return check


# -- XS-005 ... XS-007: per protocol state --------------------------------------------


def check_pending_restart(inp: CheckInput) -> list[RawFinding]:
    """XS-005: the running service started before its config file was last written."""
    out = []
    for planned, obs in inp.scanned():
        site = server_site(planned, obs)
        for protocol, p in _protocols(obs):
            if not p.pending_restart:
                continue
            fields = common_fields(planned.name, site, obs, protocol)
            fields.update(
                observed=value_text(p.allow_cross_site),
                config_modified=iso(p.config_modified),
                service_started=iso(p.service_started),
            )
            evidence = {**_state(p), "service": p.service, "service_started": iso(p.service_started)}
            ref = p.config_reference
            if (ref is not None and ref.outcome == "applied" and ref.modified is not None
                    and (p.config_modified is None or ref.modified > p.config_modified)):
                # the file= / configSource= file was written last: name it, not the config file
                fields.update(config_file=ref.path.rsplit("\\", 1)[-1] or ref.value, config_modified=iso(ref.modified))
                evidence["config_reference_modified"] = iso(ref.modified)
            out.append(RawFinding("XS-005", planned.name, site, protocol, fields, evidence,
                                  observed=value_text(p.allow_cross_site)))
    return out


def check_config_unusable(inp: CheckInput) -> list[RawFinding]:
    """XS-006: the config file is missing, unreadable, malformed or has a non-boolean value."""
    out = []
    for planned, obs in inp.scanned():
        site = server_site(planned, obs)
        for protocol, p in _protocols(obs):
            if p.config_status not in BAD_CONFIG_STATUSES:
                continue
            detail = p.detail.strip()
            if detail and not detail.endswith((".", "!", "?")):
                detail += "."
            fields = common_fields(planned.name, site, obs, protocol)
            fields.update(config_status=p.config_status, detail=detail)
            evidence = {**_state(p), "detail": p.detail, "config_length": p.config_length}
            out.append(RawFinding("XS-006", planned.name, site, protocol, fields, evidence,
                                  observed=p.config_status))
    return out


def check_key_notes(inp: CheckInput) -> list[RawFinding]:
    """XS-007: the key is duplicated, removed, cleared, or appSettings is redirected."""
    out = []
    for planned, obs in inp.scanned():
        site = server_site(planned, obs)
        for protocol, p in _protocols(obs):
            if not p.key_notes:
                continue
            notes = [_clip(n) for n in p.key_notes]
            fields = common_fields(planned.name, site, obs, protocol)
            fields.update(notes="; ".join(notes), observed=value_text(p.allow_cross_site))
            evidence = {**_state(p), "notes": notes}
            out.append(RawFinding("XS-007", planned.name, site, protocol, fields, evidence,
                                  observed=value_text(p.allow_cross_site)))
    return out


# -- XS-008 / XS-009: consistency -------------------------------------------------------


def check_protocols_disagree(inp: CheckInput) -> list[RawFinding]:
    """XS-008: POP3 and IMAP4 give different effective values on one server."""
    out = []
    for planned, obs in inp.scanned():
        site = server_site(planned, obs)
        pop3, imap4 = obs.protocols.get("pop3"), obs.protocols.get("imap4")
        if pop3 is None or imap4 is None:
            continue
        a, b = pop3.allow_cross_site, imap4.allow_cross_site
        if a is None or b is None or a == b:
            continue
        want_a = inp.policy.baseline(planned.name, site, "pop3").allow_cross_site
        want_b = inp.policy.baseline(planned.name, site, "imap4").allow_cross_site
        if a == want_a and b == want_b:
            continue  # the policy asks for different values
        fields = common_fields(planned.name, site, obs, None)
        fields.update(pop3_value=value_text(a), imap4_value=value_text(b))
        evidence = {"pop3": _state(pop3), "imap4": _state(imap4), "baseline": {"pop3": want_a, "imap4": want_b}}
        out.append(RawFinding("XS-008", planned.name, site, None, fields, evidence,
                              observed=f"pop3={value_text(a)}, imap4={value_text(b)}"))
    return out


def check_site_disagrees(inp: CheckInput) -> list[RawFinding]:
    """XS-009: the servers of one AD site give different values for one protocol."""
    groups: dict[tuple[str, str], list[tuple[str, str, bool, bool]]] = {}
    spelling: dict[str, str] = {}
    for planned, obs in inp.scanned():
        site = server_site(planned, obs)
        if not site:
            continue
        spelling.setdefault(site.casefold(), site)
        for protocol, p in _protocols(obs):
            if p.allow_cross_site is None:
                continue
            wanted = inp.policy.baseline(planned.name, site, protocol).allow_cross_site
            groups.setdefault((site.casefold(), protocol), []).append((planned.name, site, p.allow_cross_site, wanted))
    out = []
    for protocol in PROTOCOLS:
        for (site_key, proto), members in groups.items():
            if proto != protocol or len({value for _n, _s, value, _w in members}) < 2:
                continue
            if all(value == wanted for _n, _s, value, wanted in members):
                continue  # the policy asks for different values
            members = sorted(members, key=lambda m: m[0].casefold())
            site = spelling[site_key]
            values = [f"{name}={value_text(value)}" for name, _s, value, _w in members]
            fields = common_fields(None, site, None, protocol)
            fields.update(
                values=_listed(values),
                servers_true=_listed([n for n, _s, v, _w in members if v]),
                servers_false=_listed([n for n, _s, v, _w in members if not v]),
            )
            evidence = {
                "servers": {name: value for name, _s, value, _w in members},
                "baseline": {name: wanted for name, _s, _v, wanted in members},
            }
            out.append(RawFinding("XS-009", None, site, protocol, fields, evidence, observed=", ".join(values)))
    return out


# -- XS-010 ... XS-012 ------------------------------------------------------------------


def check_refused_logons(inp: CheckInput) -> list[RawFinding]:
    """XS-010: event 1008 (refused cross-site logon) collected in this scan.

    The event query's cut-off may overlap the previous scan; events already reported with
    the previous successful observation are not counted again. A server whose Application
    log could not be read is not evaluated (the report says so, with the reason); where the
    collector read only part of the matches, the count is a lower bound ("lower_bound").
    """
    out = []
    for planned, obs in inp.scanned():
        if not obs.events_read:
            continue
        site = server_site(planned, obs)
        for protocol, p in _protocols(obs):
            prev = inp.previous.get((planned.name.casefold(), protocol))
            seen = {(r.at, r.user, r.mailbox_site) for r in prev.protocol.refused_logons} if prev else set()
            logons = [r for r in p.refused_logons if (r.at, r.user, r.mailbox_site) not in seen]
            if not logons:
                continue
            users = sorted({_clip(r.user) for r in logons if r.user}, key=str.casefold)
            sites = sorted({_clip(r.mailbox_site) for r in logons if r.mailbox_site}, key=str.casefold)
            times = sorted(r.at for r in logons if r.at is not None)
            fields = common_fields(planned.name, site, obs, protocol)
            at_least = "+" if obs.events_truncated else ""  # a lower bound: "200+"
            fields.update(
                count=f"{len(logons)}{at_least}",
                users=_listed(users) or "?",
                mailbox_sites=_listed(sites) or "?",
                since=iso(obs.events_since),
            )
            evidence = {
                "count": len(logons),
                "already_reported": len(p.refused_logons) - len(logons),
                "users": users,
                "mailbox_sites": sites,
                "since": iso(obs.events_since),
                **({"lower_bound": obs.events_truncated, "limit": obs.events_limit} if obs.events_truncated else {}),
                "first_at": iso(times[0]) if times else None,
                "last_at": iso(times[-1]) if times else None,
                "events": [
                    {"at": iso(r.at), "user": _clip(r.user), "mailbox_site": _clip(r.mailbox_site),
                     "cas": _clip(r.cas)}
                    for r in logons[:MAX_EVENTS_IN_EVIDENCE]
                ],
            }
            out.append(RawFinding("XS-010", planned.name, site, protocol, fields, evidence,
                                  observed=f"{len(logons)}{at_least}"))
    return out


def check_not_scanned(inp: CheckInput) -> list[RawFinding]:
    """XS-011: a planned server whose scan failed, or that was never scanned in this run."""
    out = []
    for planned in inp.planned:
        obs = inp.observation(planned.name)
        if obs is not None and obs.scan_status == "ok":
            continue
        site = server_site(planned, obs)
        kind = obs.error_kind if obs is not None else "not-scanned"
        error = obs.error if obs is not None else "the run ended before this server was scanned"
        fields = common_fields(planned.name, site, None, None)
        fields.update(address=planned.address, error_kind=kind or "error", error=error)
        evidence = {
            "address": planned.address,
            "error_kind": kind,
            "error": error,
            "started_at": iso(obs.started_at) if obs is not None else None,
            "finished_at": iso(obs.finished_at) if obs is not None else None,
        }
        out.append(RawFinding("XS-011", planned.name, site, None, fields, evidence, observed=kind))
    return out


def check_build(inp: CheckInput) -> list[RawFinding]:
    """XS-012: the server runs below Exchange 2007 SP3, or a build not recognised."""
    out = []
    for planned, obs in inp.scanned():
        if obs.build_recognised and obs.service_pack == "SP3":
            continue
        site = server_site(planned, obs)
        fields = common_fields(planned.name, site, obs, None)
        fields.update(build=obs.build, service_pack=obs.service_pack if obs.build_recognised else None)
        evidence = {
            "build": obs.build,
            "service_pack": obs.service_pack,
            "rollup": obs.rollup,
            "build_recognised": obs.build_recognised,
        }
        out.append(RawFinding("XS-012", planned.name, site, None, fields, evidence,
                              observed=obs.build, expected=f"{sp3_build()} (SP3) or later"))
    return out


def check_service_enabled(inp: CheckInput) -> list[RawFinding]:
    """XS-013: a POP3 or IMAP4 service is not Disabled where the policy says the protocol is not used."""
    out = []
    for planned, obs in inp.scanned():
        site = server_site(planned, obs)
        for protocol, p in _protocols(obs):
            wanted = inp.policy.service_baseline(planned.name, site, protocol)
            if wanted.service != "disabled" or p.service == "absent" or not p.start_mode:
                continue  # the protocol may be used; not installed; start mode not read (not evaluated)
            if p.start_mode.casefold() == "disabled":
                continue
            fields = common_fields(planned.name, site, obs, protocol)
            fields.update(observed=_clip(p.start_mode), service_state=_clip(p.service) or None,
                          baseline_scope=wanted.source)
            evidence = {"start_mode": p.start_mode, "service": p.service or None,
                        "service_started": iso(p.service_started), "baseline": wanted.service,
                        "baseline_scope": wanted.source}
            out.append(RawFinding("XS-013", planned.name, site, protocol, fields, evidence,
                                  observed=p.start_mode, expected="Disabled"))
    return out


_VALUE_FIELDS = frozenset({"observed", "expected", "value_source", "raw_value", "baseline_scope"})
_CHANGE_FIELDS = frozenset(
    {"before", "after", "build_before", "build_after", "build", "run_before", "run_after", "date_before", "date_after"}
)

CHECKS: dict[str, Check] = {
    c.rule: c
    for c in (
        Check("XS-001", _VALUE_FIELDS, _baseline_check("XS-001", True)),
        Check("XS-002", _VALUE_FIELDS, _baseline_check("XS-002", False)),
        Check("XS-003", _CHANGE_FIELDS, _change_check("XS-003", True)),
        Check("XS-004", _CHANGE_FIELDS, _change_check("XS-004", False)),
        Check("XS-005", frozenset({"observed", "config_modified", "service_started"}), check_pending_restart),
        Check("XS-006", frozenset({"config_status", "detail"}), check_config_unusable),
        Check("XS-007", frozenset({"notes", "observed"}), check_key_notes),
        Check("XS-008", frozenset({"pop3_value", "imap4_value"}), check_protocols_disagree),
        Check("XS-009", frozenset({"values", "servers_true", "servers_false"}), check_site_disagrees),
        Check("XS-010", frozenset({"count", "users", "mailbox_sites", "since"}), check_refused_logons),
        Check("XS-011", frozenset({"address", "error_kind", "error"}), check_not_scanned),
        Check("XS-012", frozenset({"build", "service_pack"}), check_build),
        Check("XS-013", frozenset({"observed", "service_state", "baseline_scope"}), check_service_enabled),
    )
}


def run_checks(inp: CheckInput) -> list[RawFinding]:
    """Every rule's findings, in catalog order then inventory order."""
    findings: list[RawFinding] = []
    for rule in sorted(CHECKS):
        findings.extend(CHECKS[rule].run(inp))
    return findings
