"""Reads what the collector (and the discovery script) printed: untrusted bytes in,
typed collected data out, or CollectorOutputError with one sentence saying why not."""

from __future__ import annotations

import base64
import binascii
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from lxml import etree

from scanner.collect import END_MARKER, discovery_schema_path, schema_path
from scanner.collect.collected import (
    CollectedConfig,
    CollectedHost,
    CollectedReference,
    CollectedService,
    RefusedLogon,
    Rollup,
    SetupInfo,
)
from scanner.errors import CollectionError, CollectorOutputError
from scanner.facts import PROTOCOLS
from scanner.util.timefmt import parse_iso_utc
from scanner.util.xmlsafe import hardened_parser

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DISCOVERY_MAX_BYTES = 4 * 1024 * 1024
_SNIPPET = 80


@dataclass(frozen=True)
class DiscoveredServer:
    """One Client Access Server as Get-ExchangeServer lists it."""

    name: str
    fqdn: str
    site: str
    roles: tuple[str, ...]  # ServerRole flags: ("ClientAccess", "HubTransport")
    version: str  # AdminDisplayVersion: "Version 8.3 (Build 83.6)"


def _clip(text: str, limit: int = _SNIPPET) -> str:
    """One line of at most `limit` characters, without a final full stop."""
    text = " ".join(text.split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


_schemas = threading.local()
_schema_build = threading.Lock()


def _schema(kind: str) -> etree.XMLSchema:
    """This thread's compiled schema. Compiling is serialised: concurrent first calls from
    a scan's worker threads made lxml fail (XMLSchemaParseError) or hang; each thread keeps
    its own validator, so one thread's error log never reports another's document."""
    cache: dict[str, etree.XMLSchema] | None = getattr(_schemas, "cache", None)
    if cache is None:
        cache = _schemas.cache = {}
    schema = cache.get(kind)
    if schema is None:
        path = schema_path() if kind == "collector" else discovery_schema_path()
        with _schema_build:
            schema = etree.XMLSchema(etree.fromstring(path.read_bytes(), hardened_parser()))
        cache[kind] = schema
    return schema


def _document(stdout: bytes, max_bytes: int, what: str) -> etree._Element:
    """The schema-valid root element of the document before the end marker."""
    if not isinstance(stdout, (bytes, bytearray)):
        raise CollectorOutputError(f"The {what} output must be bytes, not {type(stdout).__name__}.")
    if len(stdout) > max_bytes:
        raise CollectorOutputError(
            f"The {what} output is {len(stdout)} bytes, more than the limit of {max_bytes} bytes.",
            hint="A real collection is well under a megabyte; the host may be compromised or misbehaving.",
        )
    try:
        text = bytes(stdout).decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise CollectorOutputError(
            f"The {what} output is not valid UTF-8 (byte {exc.start}).",
            hint="The collector writes UTF-8 whatever the console code page; other bytes mean the output was altered.",
        ) from None
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    marker_at = None
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].rstrip("\r") == END_MARKER:
            marker_at = index
            break
    if marker_at is None:
        raise CollectorOutputError(
            f"The {what} output has no end marker line {END_MARKER!r}: it was truncated or the script failed.",
        )
    trailing = "\n".join(lines[marker_at + 1 :]).strip()
    if trailing:
        raise CollectorOutputError(f"The {what} output continues after the end marker: {_clip(trailing)!r}.")
    body = "\n".join(lines[:marker_at]).strip()
    if not body:
        raise CollectorOutputError(f"The {what} output has no document before the end marker.")
    if "<!doctype" in body.lower() or "<!entity" in body.lower():
        raise CollectorOutputError(f"The {what} output contains a DOCTYPE or entity declaration, which is refused.")
    try:
        root = etree.fromstring(body.encode("utf-8"), hardened_parser())
    except etree.XMLSyntaxError as exc:
        raise CollectorOutputError(f"The {what} output is not well-formed XML: {_clip(str(exc), 160)}.") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise CollectorOutputError(f"The {what} output contains a DOCTYPE, which is refused.")
    schema = _schema("collector" if what == "collector" else "discovery")
    if not schema.validate(root):
        error = schema.error_log.last_error
        raise CollectorOutputError(
            f"The {what} output does not match its schema (line {error.line}): {_clip(error.message, 160)}."
        )
    return root


def _utc(value: str, where: str) -> datetime | None:
    if value == "":
        return None
    try:
        return parse_iso_utc(value)
    except ValueError:
        raise CollectorOutputError(f"The collector output has an impossible timestamp {_clip(value)!r} in {where}.") from None


def _int(value: str, where: str) -> int | None:
    if value == "":
        return None
    if not value.isascii() or not value.isdigit():
        raise CollectorOutputError(f"The collector output has {_clip(value)!r} where {where} must be a whole number.")
    return int(value)


def _flag(value: str | None) -> bool:
    return value == "true"


def _by_protocol(elements: list[etree._Element], what: str) -> dict[str, etree._Element]:
    found: dict[str, etree._Element] = {}
    for element in elements:
        protocol = element.get("protocol", "")
        if protocol in found:
            raise CollectorOutputError(f"The collector output has two {what} elements for {protocol}.")
        found[protocol] = element
    missing = [p for p in PROTOCOLS if p not in found]
    if missing:
        raise CollectorOutputError(f"The collector output has no {what} element for {missing[0]}.")
    return found


def _config(element: etree._Element) -> CollectedConfig:
    protocol = element.get("protocol", "")
    where = f"the {protocol} config"
    exists = _flag(element.get("exists"))
    length = _int(element.get("length", ""), f"the length of {where}")
    error = element.get("error", "")
    content = _content(element, exists, error, length, where)
    return CollectedConfig(
        protocol=protocol,
        path=element.get("path", ""),
        exists=exists,
        length=length,
        modified=_utc(element.get("modified", ""), f"{where}'s modified time"),
        error=error,
        content=content,
    )


def _content(element: etree._Element, exists: bool, error: str, length: int | None, where: str) -> bytes | None:
    """The base64 content of a <config> or <ref>, checked against what its attributes say."""
    encoded = element.text or ""
    content: bytes | None = None
    if encoded:
        if not exists or error:
            raise CollectorOutputError(f"The collector output carries content for {where} that it says was not read.")
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise CollectorOutputError(f"The collector output has invalid base64 in {where}.") from None
    elif exists and not error and length == 0:
        content = b""
    elif exists and not error:
        raise CollectorOutputError(f"The collector output has no content for {where} although it read the file.")
    if content is not None and length is not None and len(content) != length:
        raise CollectorOutputError(
            f"The collector output's {where} decodes to {len(content)} bytes, but its length says {length}."
        )
    return content


def _references(config: CollectedConfig, element: etree._Element | None) -> CollectedConfig:
    """The config file with the files its appSettings elements name (<configrefs>)."""
    if element is None:
        return config  # an older collector: references stays None (not looked for)
    refs = []
    for ref in element.findall("ref"):
        where = f"the {config.protocol} config's {ref.get('attribute', '')}= file"
        exists = _flag(ref.get("exists"))
        length = _int(ref.get("length", ""), f"the length of {where}")
        error = ref.get("error", "")
        refs.append(CollectedReference(
            attribute=ref.get("attribute", ""),
            value=ref.get("value", ""),
            path=ref.get("path", ""),
            exists=exists,
            length=length,
            modified=_utc(ref.get("modified", ""), f"{where}'s modified time"),
            error=error,
            content=_content(ref, exists, error, length, where),
        ))
    return replace(config, references=tuple(refs), references_error=element.get("error", ""))


def _service(element: etree._Element) -> CollectedService:
    protocol = element.get("protocol", "")
    return CollectedService(
        protocol=protocol,
        name=element.get("name", ""),
        exists=_flag(element.get("exists")),
        status=element.get("status", ""),
        start_mode=element.get("startmode", ""),
        process_id=_int(element.get("processid", ""), f"the {protocol} service's process id"),
        started=_utc(element.get("started", ""), f"the {protocol} service's start time"),
    )


def _event(element: etree._Element) -> RefusedLogon:
    return RefusedLogon(
        source=element.get("source", ""),
        at=_utc(element.get("at", ""), "an event's time"),
        insertions=tuple(child.text or "" for child in element.findall("insertion")),
        message=element.findtext("message") or "",
    )


def _configs(root: etree._Element) -> dict[str, CollectedConfig]:
    configs = {p: _config(e) for p, e in _by_protocol(root.findall("config"), "config").items()}
    found: dict[str, etree._Element] = {}
    for element in root.findall("configrefs"):
        protocol = element.get("protocol", "")
        if protocol in found:
            raise CollectorOutputError(f"The collector output has two configrefs elements for {protocol}.")
        found[protocol] = element
    return {p: _references(c, found.get(p)) for p, c in configs.items()}


def read_collector_output(stdout: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> CollectedHost:
    """The collected data in one collector run's stdout; CollectorOutputError if it cannot be trusted."""
    root = _document(stdout, max_bytes, "collector")
    host = root.find("host")
    setup = root.find("setup")
    exsetup = root.find("exsetup")
    events = root.find("events")
    assert host is not None and setup is not None and exsetup is not None and events is not None  # schema
    return CollectedHost(
        computer=host.get("computer", ""),
        site=host.get("site", ""),
        ps_version=root.get("psversion", ""),
        collected_at=_utc(root.get("collected", ""), "the collection time"),
        setup=SetupInfo(
            key=setup.get("key", ""),
            install_path=setup.get("installpath", ""),
            product_major=setup.get("productmajor", ""),
            product_minor=setup.get("productminor", ""),
            build_major=setup.get("buildmajor", ""),
            build_minor=setup.get("buildminor", ""),
            exsetup_path=exsetup.get("path", ""),
            exsetup_exists=_flag(exsetup.get("exists")),
            exsetup_version=exsetup.get("version", ""),
        ),
        rollups=tuple(Rollup(name=r.get("name", ""), installed=r.get("installed", "")) for r in root.findall("rollup")),
        configs=_configs(root),
        services={p: _service(e) for p, e in _by_protocol(root.findall("service"), "service").items()},
        events_since=_utc(events.get("since", ""), "the events' cut-off"),
        events_truncated=_flag(events.get("truncated")),
        events=tuple(_event(e) for e in events.findall("event")),
        errors=tuple((e.get("stage", ""), e.get("message", "")) for e in root.findall("error")),
        **_event_window(events),
        site_source=host.get("sitesource", ""),
    )


def _event_window(events: etree._Element) -> dict[str, Any]:
    """What the events element says about how much of the Application log was read."""
    error = events.get("error", "")
    if error and len(events):
        raise CollectorOutputError("The collector output lists events from an Application log it says it could not read.")
    return {
        "events_max": _int(events.get("max", ""), "the events' max") if events.get("max", "").isdigit() else None,
        "events_window": _int(events.get("window", ""), "the events' window"),
        "events_window_full": _flag(events.get("full")),
        "events_error": error,
    }


def read_discovery_output(stdout: bytes, *, max_bytes: int = DISCOVERY_MAX_BYTES) -> list[DiscoveredServer]:
    """The Client Access Servers the discovery script listed.

    Raises CollectorOutputError for untrustworthy output and CollectionError (kind
    "script-error") when the script reported an error, since the list may then be
    incomplete.
    """
    root = _document(stdout, max_bytes, "discovery")
    errors = root.findall("error")
    if errors:
        stage, message = errors[0].get("stage", ""), errors[0].get("message", "")
        if stage == "snapin":
            hint = "Run it on a host with the Exchange 2007 management tools installed."
        else:   # Get-ExchangeServer reads AD from the host: the second hop
            hint = ("Get-ExchangeServer reads Active Directory from the management host with the credentials of "
                    "the WinRM logon; without a delegated Kerberos ticket (the second hop: a forwardable ticket "
                    "and a host trusted for delegation) it cannot reach a domain controller. "
                    "`cas-audit inventory discover --ldap DC` reads the directory from this host instead.")
        raise CollectionError(
            "script-error",
            f"Discovery failed on the management host at stage {stage!r}: {_clip(message, 160)}",
            hint=hint,
        )
    servers = []
    for element in root.findall("server"):
        roles = tuple(r.strip() for r in element.get("role", "").split(",") if r.strip())
        servers.append(
            DiscoveredServer(
                name=element.get("name", ""),
                fqdn=element.get("fqdn", ""),
                site=element.get("site", ""),
                roles=roles,
                version=element.get("version", ""),
            )
        )
    return servers
