"""The audit policy: desired value of AllowCrossSiteSessions, whether the POP3 and IMAP4
services may run, waivers and severity overrides.

Read from a TOML file (`scan --policy FILE`, format in docs/contracts.md and rules/baseline.toml).
Everything is validated when loaded, before any scan: a malformed policy is a ConfigError
naming the file, the line and the field.

Which baseline applies to a server and protocol, most specific first:
  1. an override naming the server (glob) and the protocol
  2. an override naming the server (glob) for both protocols
  3. an override naming the site and the protocol
  4. an override naming the site for both protocols
  5. the organisation default ([baseline] allow_cross_site; false when absent)
Among overrides of the same rank, the one written last in the file wins. The services
(`pop3_service`, `imap4_service`: "any", the default, or "disabled", XS-013) are resolved
the same way, each key on its own: an override that does not set a key leaves it to the
next entry down the list. Server globs
(fnmatch: * ? [..]) and site names compare case-insensitively.

A waiver applies from its creation up to and including its `expires` day (UTC date of
the run); from the day after it is expired and its findings are active again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from scanner.errors import ConfigError
from scanner.facts import PROTOCOLS, RULE_IDS, SERVICE_POLICIES, SEVERITIES, ServicePolicy
from scanner.util.paths import data_dir
from scanner.util.timefmt import day_iso
from scanner.util.tomlfile import SourceLines, read_text

MAX_POLICY_BYTES = 1024 * 1024
#: The [baseline] key of each protocol's service (XS-013).
SERVICE_KEYS: dict[str, str] = {protocol: f"{protocol}_service" for protocol in PROTOCOLS}


class _Scoped:
    """The scope an override or a waiver applies to: a server glob or a site name, and
    optionally one protocol (the parser guarantees exactly one of server and site)."""

    server: str | None
    site: str | None
    protocol: str | None

    def covers(self, server: str | None, site: str | None, protocol: str | None) -> bool:
        """Whether that server/site/protocol is in the scope (globs and sites ignore case)."""
        if self.protocol is not None and self.protocol != protocol:
            return False
        if self.server is not None:
            return server is not None and _glob(server, self.server)
        return site is not None and self.site is not None and site.casefold() == self.site.casefold()

    @property
    def scope(self) -> str:
        """The scope in words: "server CAS0*", "site Hamburg / pop3"."""
        where = f"server {self.server}" if self.server is not None else f"site {self.site}"
        return f"{where} / {self.protocol}" if self.protocol else where


@dataclass(frozen=True)
class BaselineOverride(_Scoped):
    """One [[baseline.override]] entry (it sets allow_cross_site, a service, or both)."""

    allow_cross_site: bool | None
    server: str | None = None  # glob
    site: str | None = None
    protocol: str | None = None
    position: int = 0  # order in the file
    services: Mapping[str, ServicePolicy] = field(default_factory=dict)  # protocol -> any | disabled

    @property
    def rank(self) -> tuple[int, int, int]:
        return (2 if self.server is not None else 1, 1 if self.protocol else 0, self.position)



@dataclass(frozen=True)
class Baseline:
    """The desired value for one server and protocol and which policy entry set it."""

    allow_cross_site: bool
    source: str  # "organisation", "site Hamburg", "server CAS0* / pop3"


@dataclass(frozen=True)
class ServiceBaseline:
    """What the policy asks of one server's POP3 or IMAP4 service, and which entry said so."""

    service: ServicePolicy  # any | disabled
    source: str  # "organisation", "site Hamburg", "server CAS0* / pop3"


@dataclass(frozen=True)
class Waiver(_Scoped):
    """One [[waiver]] entry."""

    rule: str
    justification: str
    approver: str
    expires: date
    server: str | None = None  # glob
    site: str | None = None
    protocol: str | None = None
    created: date | None = None
    position: int = 0

    def matches(self, rule: str, server: str | None, site: str | None, protocol: str | None) -> bool:
        """Whether the waiver covers a finding of `rule` about that server/site/protocol."""
        return rule == self.rule and self.covers(server, site, protocol)

    def expired_on(self, day: date) -> bool:
        """True from the day after `expires`."""
        return day > self.expires

    def as_json(self, day: date) -> dict[str, Any]:
        """The waiver as stored with a finding, with its state on `day`."""
        return {
            "rule": self.rule,
            "scope": self.scope,
            "server": self.server,
            "site": self.site,
            "protocol": self.protocol,
            "justification": self.justification,
            "approver": self.approver,
            "created": day_iso(self.created) if self.created else None,
            "expires": day_iso(self.expires),
            "state": "expired" if self.expired_on(day) else "active",
        }


@dataclass(frozen=True)
class Policy:
    """A loaded policy, with its source text and SHA-256 (stored with each run)."""

    organisation_default: bool = False
    overrides: tuple[BaselineOverride, ...] = ()
    waivers: tuple[Waiver, ...] = ()
    severity: Mapping[str, str] = field(default_factory=dict)
    source_text: str = ""
    source_path: str | None = None
    organisation_services: Mapping[str, ServicePolicy] = field(default_factory=dict)  # protocol -> any | disabled

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source_text.encode("utf-8")).hexdigest()

    @classmethod
    def default(cls) -> Policy:
        """The default policy shipped in rules/baseline.toml (cross-site forbidden everywhere)."""
        return load_policy(data_dir("rules") / "baseline.toml")

    @classmethod
    def from_text(cls, text: str, source: str = "<policy>", rule_ids: Collection[str] | None = None) -> Policy:
        """Parse and validate policy text; `source` names it in error messages."""
        return _parse(text, source, rule_ids)

    def baseline(self, server: str | None, site: str | None, protocol: str | None) -> Baseline:
        """The desired value for `server` in `site` for `protocol` (most specific entry wins)."""
        best: BaselineOverride | None = None
        for override in self.overrides:
            if (override.allow_cross_site is not None and override.covers(server, site, protocol)
                    and (best is None or override.rank > best.rank)):
                best = override
        if best is None or best.allow_cross_site is None:
            return Baseline(self.organisation_default, "organisation")
        return Baseline(best.allow_cross_site, best.scope)

    def service_baseline(self, server: str | None, site: str | None, protocol: str) -> ServiceBaseline:
        """What the policy asks of `protocol`'s service on `server` in `site` (most specific entry wins)."""
        best: BaselineOverride | None = None
        for override in self.overrides:
            if (protocol in override.services and override.covers(server, site, protocol)
                    and (best is None or override.rank > best.rank)):
                best = override
        if best is None:
            return ServiceBaseline(self.organisation_services.get(protocol, "any"), "organisation")
        return ServiceBaseline(best.services[protocol], best.scope)

    def severity_for(self, rule: str, default: str) -> str:
        """The severity of `rule` after the policy's overrides."""
        return self.severity.get(rule, default)

    def waiver_for(
        self, rule: str, server: str | None, site: str | None, protocol: str | None, day: date
    ) -> Waiver | None:
        """The waiver covering this finding on `day`: an active one if any, else an expired one."""
        matching = [
            w
            for w in self.waivers
            if w.matches(rule, server, site, protocol) and (w.created is None or w.created <= day)
        ]
        active = [w for w in matching if not w.expired_on(day)]
        if active:
            return max(active, key=lambda w: (w.expires, w.position))
        if matching:
            return max(matching, key=lambda w: (w.expires, w.position))
        return None


def load_policy(path: Path | str, rule_ids: Collection[str] | None = None) -> Policy:
    """Read and validate a policy file; ConfigError (file, line, field) when it is malformed."""
    path = Path(path)
    return _parse(read_text(path, "policy", MAX_POLICY_BYTES), str(path), rule_ids)


# -- parsing -----------------------------------------------------------------------------


def _glob(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name.casefold(), pattern.casefold())


class _Locator:
    """Names the file and line of a table entry or key in error messages."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = SourceLines(text)
        self.source = source

    def error(self, header: str, index: int | None, key: str | None, problem: str, hint: str | None = None) -> ConfigError:
        line = self.lines.key(header, index, key)
        where = f"{self.source}:{line}" if line else self.source
        entry = f"[[{header}]] #{index + 1}" if index is not None else f"[{header}]"
        field_text = f", field {key!r}" if key else ""
        return ConfigError(f"{where}: {entry}{field_text}: {problem}", hint=hint)


def _parse(text: str, source: str, rule_ids: Collection[str] | None) -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if rule_ids is None:
        rule_ids = RULE_IDS
    loc = _Locator(text, source)
    unknown = sorted(set(data) - {"baseline", "waiver", "severity"})
    if unknown:
        line = loc.lines.find(r"^\s*\[*\s*(?:\"|')?" + re.escape(unknown[0]))
        where = f"{source}:{line}" if line else source
        raise ConfigError(
            f"{where}: unknown top-level key {unknown[0]!r}", hint="a policy has [baseline], [[waiver]] and [severity]"
        )

    default, services, overrides = _baseline(data.get("baseline", {}), loc)
    waivers = _waivers(data.get("waiver", []), loc, rule_ids)
    severity = _severities(data.get("severity", {}), loc, rule_ids)
    return Policy(
        organisation_default=default,
        organisation_services=services,
        overrides=overrides,
        waivers=waivers,
        severity=severity,
        source_text=text,
        source_path=source,
    )


def _services(
    entry: dict[str, Any], loc: _Locator, header: str, index: int | None, protocol: str | None = None
) -> dict[str, ServicePolicy]:
    """The pop3_service / imap4_service keys of [baseline] or of an override."""
    services: dict[str, ServicePolicy] = {}
    for name, key in SERVICE_KEYS.items():
        if key not in entry:
            continue
        value = entry[key]
        wanted = value.strip().lower() if isinstance(value, str) else None
        if wanted not in SERVICE_POLICIES:
            raise loc.error(header, index, key, f"must be \"any\" or \"disabled\", not {value!r}",
                            hint=f'{key} = "disabled" when {name.upper()} is not used there (XS-013)')
        if protocol is not None and protocol != name:
            raise loc.error(header, index, key, f"this override is for protocol {protocol}, not {name}")
        services[name] = "disabled" if wanted == "disabled" else "any"
    return services


def _baseline(table: Any, loc: _Locator) -> tuple[bool, dict[str, ServicePolicy], tuple[BaselineOverride, ...]]:
    if not isinstance(table, dict):
        raise loc.error("baseline", None, None, "must be a table")
    unknown = sorted(set(table) - {"allow_cross_site", "override", *SERVICE_KEYS.values()})
    if unknown:
        raise loc.error("baseline", None, unknown[0], "unknown field",
                        hint="allowed: allow_cross_site, pop3_service, imap4_service, [[baseline.override]]")
    default = table.get("allow_cross_site", False)
    if not isinstance(default, bool):
        raise loc.error("baseline", None, "allow_cross_site", "must be true or false (unquoted)")
    services = _services(table, loc, "baseline", None)
    entries = table.get("override", [])
    if not isinstance(entries, list):
        raise loc.error("baseline", None, "override", "must be written as [[baseline.override]] tables")
    overrides = []
    for index, entry in enumerate(entries):
        header = "baseline.override"
        if not isinstance(entry, dict):
            raise loc.error(header, index, None, "must be a table")
        allowed = {"server", "site", "protocol", "allow_cross_site", *SERVICE_KEYS.values()}
        extra = sorted(set(entry) - allowed)
        if extra:
            raise loc.error(header, index, extra[0], "unknown field", hint=f"allowed: {', '.join(sorted(allowed))}")
        server, site = _scope(entry, loc, header, index)
        protocol = _protocol(entry, loc, header, index)
        service_values = _services(entry, loc, header, index, protocol)
        if "allow_cross_site" not in entry and not service_values:
            raise loc.error(header, index, None, "set allow_cross_site, pop3_service or imap4_service")
        value = entry.get("allow_cross_site")
        if value is not None and not isinstance(value, bool):
            raise loc.error(header, index, "allow_cross_site", "must be true or false (unquoted)")
        overrides.append(
            BaselineOverride(
                allow_cross_site=value,
                server=server,
                site=site,
                protocol=protocol,
                position=index,
                services=service_values,
            )
        )
    return default, services, tuple(overrides)


def _scope(entry: dict[str, Any], loc: _Locator, header: str, index: int) -> tuple[str | None, str | None]:
    server = entry.get("server")
    site = entry.get("site")
    if server is None and site is None:
        raise loc.error(header, index, None, "give a scope: server = \"glob\" or site = \"name\"")
    if server is not None and site is not None:
        raise loc.error(header, index, "site", "give either server or site, not both")
    for key, value in (("server", server), ("site", site)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise loc.error(header, index, key, "must be a non-empty string")
    return (server.strip() if server else None), (site.strip() if site else None)


def _protocol(entry: dict[str, Any], loc: _Locator, header: str, index: int) -> str | None:
    value = entry.get("protocol")
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in PROTOCOLS:
        raise loc.error(header, index, "protocol", f"must be one of {', '.join(PROTOCOLS)}, not {value!r}")
    return value.strip().lower()


def _text(entry: dict[str, Any], key: str, loc: _Locator, header: str, index: int) -> str:
    value = entry.get(key)
    if value is None:
        raise loc.error(header, index, None, f"field {key!r} is required")
    if not isinstance(value, str) or not value.strip():
        raise loc.error(header, index, key, "must be a non-empty string")
    return value.strip()


def _date(entry: dict[str, Any], key: str, loc: _Locator, header: str, index: int, required: bool) -> date | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise loc.error(header, index, None, f"field {key!r} is required", hint=f"e.g. {key} = 2027-03-31")
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise loc.error(
            header, index, key, f"must be a date, not {value!r}", hint=f"write it unquoted: {key} = 2027-03-31"
        )
    return value


def _waivers(entries: Any, loc: _Locator, rule_ids: Collection[str]) -> tuple[Waiver, ...]:
    header = "waiver"
    if not isinstance(entries, list):
        raise loc.error(header, None, None, "waivers must be written as [[waiver]] tables")
    allowed = {"rule", "server", "site", "protocol", "justification", "approver", "created", "expires"}
    waivers = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise loc.error(header, index, None, "must be a table")
        extra = sorted(set(entry) - allowed)
        if extra:
            raise loc.error(header, index, extra[0], "unknown field", hint=f"allowed: {', '.join(sorted(allowed))}")
        rule = _text(entry, "rule", loc, header, index).upper()
        if rule not in rule_ids:
            raise loc.error(header, index, "rule", f"unknown rule {rule!r}", hint="`cas-audit rules` lists the catalog")
        server, site = _scope(entry, loc, header, index)
        justification = _text(entry, "justification", loc, header, index)
        approver = _text(entry, "approver", loc, header, index)
        created = _date(entry, "created", loc, header, index, required=False)
        expires = _date(entry, "expires", loc, header, index, required=True)
        assert expires is not None
        if created is not None and expires < created:
            raise loc.error(header, index, "expires", f"{day_iso(expires)} is before created ({day_iso(created)})")
        waivers.append(
            Waiver(
                rule=rule,
                justification=justification,
                approver=approver,
                expires=expires,
                server=server,
                site=site,
                protocol=_protocol(entry, loc, header, index),
                created=created,
                position=index,
            )
        )
    return tuple(waivers)


def _severities(table: Any, loc: _Locator, rule_ids: Collection[str]) -> dict[str, str]:
    if not isinstance(table, dict):
        raise loc.error("severity", None, None, "must be a table of \"XS-0nn\" = \"severity\"")
    result: dict[str, str] = {}
    for rule, value in table.items():
        if rule.upper() not in rule_ids:
            raise loc.error("severity", None, rule, f"unknown rule {rule!r}", hint="`cas-audit rules` lists the catalog")
        if not isinstance(value, str) or value.strip().lower() not in SEVERITIES:
            raise loc.error("severity", None, rule, f"must be one of {', '.join(SEVERITIES)}, not {value!r}")
        result[rule.upper()] = value.strip().lower()
    return result
