"""Reading the collector's and the discovery script's output: valid documents become
typed evidence; every kind of untrustworthy output is refused with CollectorOutputError."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest

from scanner.collect import END_MARKER
from scanner.collect.reader import (
    DiscoveredServer,
    read_collector_output,
    read_discovery_output,
)
from scanner.errors import CollectionError, CollectorOutputError

INSTALL = "C:\\Programme\\Microsoft\\Exchange Server\\"
EXSETUP = INSTALL + "bin\\ExSetup.exe"
POP3_CONFIG = (
    b'<?xml version="1.0" encoding="utf-8"?>\r\n<configuration><appSettings>'
    b'<add key="AllowCrossSiteSessions" value="true" /></appSettings></configuration>'
)
IMAP4_CONFIG = "\ufeff<configuration/>".encode("utf-16")


def attrs(**values: str) -> str:
    return "".join(f" {name}={quoteattr(value)}" for name, value in values.items())


def config(protocol: str, content: bytes | None, body: str | None = None, **over: str) -> str:
    name = {"pop3": "Pop3", "imap4": "Imap4"}[protocol]
    values = dict(
        protocol=protocol,
        path=f"{INSTALL}ClientAccess\\PopImap\\Microsoft.Exchange.{name}.exe.Config",
        exists="true" if content is not None else "false",
        length=str(len(content)) if content is not None else "",
        modified="2026-11-20T10:00:00Z" if content is not None else "",
        error="",
    )
    values.update(over)
    text = body if body is not None else (base64.b64encode(content).decode() if content is not None else "")
    return f"<config{attrs(**values)}>{text}</config>"


def service(protocol: str, **over: str) -> str:
    values = dict(
        protocol=protocol,
        name={"pop3": "MSExchangePOP3", "imap4": "MSExchangeIMAP4"}[protocol],
        exists="true",
        status="Running",
        startmode="Auto",
        processid="4242",
        started="2026-11-19T08:00:00Z",
    )
    values.update(over)
    return f"<service{attrs(**values)}/>"


EVENT = (
    '<event source="MSExchangeIMAP4" id="1008" at="2026-11-21T09:00:00Z">'
    "<insertion>CONTOSO\\jörg</insertion><insertion>Hamburg</insertion><insertion>CAS01</insertion>"
    "<message>" + escape("User CONTOSO\\jörg's mailbox is in site Hamburg <cross-site> & refused.") + "</message>"
    "</event>"
)


def document(
    *,
    configs: list[str] | None = None,
    services: list[str] | None = None,
    events: str = EVENT,
    errors: str = '<error stage="site" message="The specified domain does not exist."/>',
    root_attrs: str = ' version="1" psversion="1.0.0.0" collected="2026-11-22T12:00:00Z"',
    head: str = "",
    marker: str = END_MARKER + "\r\n",
    events_attrs: str = ' truncated="false" window="10000" full="false" error=""',
) -> bytes:
    """A collector output as collect.ps1 writes it."""
    if configs is None:
        configs = [config("pop3", POP3_CONFIG), config("imap4", IMAP4_CONFIG)]
    if services is None:
        services = [service("pop3"), service("imap4", status="Stopped", processid="", started="", startmode="Manual")]
    text = (
        f"{head}<casaudit{root_attrs}>"
        '<host computer="CAS01" site="" sitesource=""/>'
        f'<setup key="Setup" installpath={quoteattr(INSTALL)} productmajor="8" productminor="1"'
        ' buildmajor="240" buildminor="6"/>'
        f'<exsetup path={quoteattr(EXSETUP)} exists="true" version="08.01.0240.006"/>'
        '<rollup name="Update Rollup 10 for Exchange Server 2007 Service Pack 1" installed="20260105"/>'
        + "".join(configs)
        + "".join(services)
        + f'<events since="2026-11-20T00:00:00Z" max="200"{events_attrs}>{events}</events>'
        + errors
        + "<end/></casaudit>\r\n"
        + marker
    )
    return text.encode("utf-8")


def test_reads_a_valid_document() -> None:
    host = read_collector_output(document())
    utc = UTC
    assert host.computer == "CAS01" and host.site == "" and host.ps_version == "1.0.0.0"
    assert host.collected_at == datetime(2026, 11, 22, 12, 0, tzinfo=utc)
    assert host.setup.install_path == INSTALL
    assert host.setup.key == "Setup" and host.setup.product_minor == "1"
    assert host.setup.exsetup_exists and host.setup.exsetup_version == "08.01.0240.006"
    assert host.setup.exsetup_path == EXSETUP
    assert [r.installed for r in host.rollups] == ["20260105"]
    pop3 = host.configs["pop3"]
    assert pop3.content == POP3_CONFIG and pop3.length == len(POP3_CONFIG) and pop3.exists
    assert pop3.path.startswith("C:\\Programme\\") and pop3.error == ""
    assert pop3.modified == datetime(2026, 11, 20, 10, 0, tzinfo=utc)
    assert host.configs["imap4"].content == IMAP4_CONFIG  # UTF-16 bytes kept exactly
    assert host.services["pop3"].process_id == 4242
    assert host.services["pop3"].started == datetime(2026, 11, 19, 8, 0, tzinfo=utc)
    imap = host.services["imap4"]
    assert (imap.status, imap.start_mode, imap.process_id, imap.started) == ("Stopped", "Manual", None, None)
    assert host.events_since == datetime(2026, 11, 20, tzinfo=utc) and not host.events_truncated
    (event,) = host.events
    assert event.insertions[:2] == ("CONTOSO\\jörg", "Hamburg") and event.protocol == "imap4"
    assert "<cross-site> &" in event.message
    assert host.errors == (("site", "The specified domain does not exist."),)


def test_reads_missing_and_unreadable_files_and_absent_services() -> None:
    out = document(
        configs=[
            config("pop3", None),
            config("imap4", None, exists="true", length="2000000", modified="2026-11-20T10:00:00Z", error="too-large"),
        ],
        services=[
            service("pop3", exists="false", status="", startmode="", processid="", started=""),
            service("imap4"),
        ],
        events="",
        errors="",
        head="\ufeff",  # a byte-order mark written by the console is tolerated
    )
    host = read_collector_output(out)
    assert host.configs["pop3"].content is None and not host.configs["pop3"].exists
    assert host.configs["pop3"].length is None and host.configs["pop3"].modified is None
    imap = host.configs["imap4"]
    assert imap.error == "too-large" and imap.content is None and imap.length == 2_000_000
    assert not host.services["pop3"].exists
    assert host.events == () and host.errors == ()


def test_empty_file_reads_as_empty_bytes() -> None:
    host = read_collector_output(document(configs=[config("pop3", b""), config("imap4", IMAP4_CONFIG)]))
    assert host.configs["pop3"].content == b""


def refused(out: bytes, fragment: str, **kwargs: int) -> CollectorOutputError:
    with pytest.raises(CollectorOutputError) as info:
        read_collector_output(out, **kwargs)
    error = info.value
    assert fragment.lower() in error.message.lower(), error.message
    assert error.kind == "output"
    assert len(error.message) < 400
    return error


def test_refuses_oversize_output_before_reading_it() -> None:
    out = document()
    refused(out, "more than the limit", max_bytes=len(out) - 1)
    assert read_collector_output(out, max_bytes=len(out)).computer == "CAS01"
    refused(b"\xff" * (9 * 1024 * 1024), "more than the limit")


def test_refuses_truncated_output() -> None:
    out = document()
    refused(out[: len(out) // 2], "no end marker")
    refused(document(marker=""), "no end marker")
    refused(document(marker=END_MARKER + " trailing\n"), "no end marker")


def test_refuses_output_after_the_marker() -> None:
    refused(document(marker=END_MARKER + "\nmore text\n"), "after the end marker")


def test_marker_inside_an_event_message_does_not_cut_the_document() -> None:
    tricky = EVENT.replace("refused.", f"refused.\n{END_MARKER}\nstill the message")
    host = read_collector_output(document(events=tricky))
    assert END_MARKER in host.events[0].message


@pytest.mark.parametrize(
    "out",
    [
        b"garbage\n" + END_MARKER.encode() + b"\n",
        b"<casaudit><host>\n" + END_MARKER.encode() + b"\n",
        b"\n" + END_MARKER.encode() + b"\n",
        b"The command line is too long.\r\n",
    ],
)
def test_refuses_garbage(out: bytes) -> None:
    with pytest.raises(CollectorOutputError):
        read_collector_output(out)


def test_refuses_invalid_utf8() -> None:
    out = document().replace("jörg".encode(), "j\xf6rg".encode("latin-1"))
    refused(out, "not valid UTF-8")


def test_refuses_doctype_and_never_reads_an_external_entity(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT-4711", encoding="utf-8")
    dtd = f'<!DOCTYPE casaudit [<!ENTITY x SYSTEM "{secret.as_uri()}">]>'
    out = document(head=dtd, errors='<error stage="site" message="&x;"/>')
    error = refused(out, "DOCTYPE")
    assert "TOP-SECRET" not in str(error) and "TOP-SECRET" not in repr(error.__dict__)
    # an internal entity (the start of an expansion bomb) is refused too
    bomb = '<!DOCTYPE casaudit [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
    refused(document(head=bomb, errors='<error stage="x" message="&b;"/>'), "DOCTYPE")


@pytest.mark.parametrize(
    ("out", "fragment"),
    [
        (document(services=[service("pop3")]), "schema"),  # one service element missing
        (document(configs=[
            config("pop3", POP3_CONFIG), config("imap4", IMAP4_CONFIG).replace('protocol="imap4"', 'protocol="smtp"')
        ]), "schema"),  # wrong protocol
        (document(root_attrs=' version="1" psversion="1.0.0.0"'), "schema"),  # missing attribute
        (document(errors='<surprise/>'), "schema"),  # unknown element
        (document(root_attrs=' version="1" psversion="1.0.0.0" collected="22.11.2026 12:00"'), "schema"),
    ],
)
def test_refuses_schema_violations(out: bytes, fragment: str) -> None:
    refused(out, fragment)


def test_refuses_duplicate_protocol() -> None:
    out = document(configs=[config("pop3", POP3_CONFIG), config("pop3", POP3_CONFIG)])
    refused(out, "two config elements for pop3")


def test_refuses_impossible_timestamp() -> None:
    refused(document(root_attrs=' version="1" psversion="1" collected="2026-13-45T99:00:00Z"'), "impossible timestamp")


def test_refuses_bad_base64() -> None:
    bad = config("pop3", POP3_CONFIG, body="QUJD=QUJD")  # passes the schema pattern, not base64
    refused(document(configs=[bad, config("imap4", IMAP4_CONFIG)]), "invalid base64")


def test_refuses_length_mismatch() -> None:
    bad = config("pop3", POP3_CONFIG, length=str(len(POP3_CONFIG) + 1))
    refused(document(configs=[bad, config("imap4", IMAP4_CONFIG)]), "length says")


def test_refuses_content_for_a_file_it_did_not_read() -> None:
    bad = config("pop3", POP3_CONFIG, error="too-large")
    refused(document(configs=[bad, config("imap4", IMAP4_CONFIG)]), "not read")


def test_quoted_snippets_are_short() -> None:
    long_value = "x" * 5000
    out = document(root_attrs=f' version="1" psversion="1.0.0.0" collected="{long_value}"')
    error = refused(out, "schema")
    assert long_value[:200] not in error.message


# --- discovery -------------------------------------------------------------------


def discovery(servers: str, errors: str = "", marker: str = END_MARKER + "\n") -> bytes:
    return f"<casdiscovery>{servers}{errors}<end/></casdiscovery>\n{marker}".encode()


SERVERS = (
    '<server name="CAS01" fqdn="cas01.contoso.local" site="Berlin" role="ClientAccess, HubTransport"'
    ' version="Version 8.3 (Build 83.6)"/>'
    '<server name="CAS02" fqdn="cas02.corp.contoso.local" site="München" role="ClientAccess"'
    ' version="Version 8.1 (Build 240.6)"/>'
)


def test_reads_discovery() -> None:
    assert read_discovery_output(discovery(SERVERS)) == [
        DiscoveredServer("CAS01", "cas01.contoso.local", "Berlin", ("ClientAccess", "HubTransport"), "Version 8.3 (Build 83.6)"),
        DiscoveredServer("CAS02", "cas02.corp.contoso.local", "München", ("ClientAccess",), "Version 8.1 (Build 240.6)"),
    ]
    assert read_discovery_output(discovery("")) == []


def test_discovery_script_error_is_a_collection_error() -> None:
    out = discovery("", '<error stage="snapin" message="No Windows PowerShell snap-ins are available."/>')
    with pytest.raises(CollectionError) as info:
        read_discovery_output(out)
    assert info.value.kind == "script-error" and "snapin" in info.value.message


@pytest.mark.parametrize(
    "out",
    [
        discovery(SERVERS, marker=""),
        discovery('<server name="CAS01"/>'),
        discovery(SERVERS).replace(b"<casdiscovery>", b"<casaudit>"),
        b"x" * (5 * 1024 * 1024),
    ],
)
def test_refuses_bad_discovery_output(out: bytes) -> None:
    with pytest.raises(CollectorOutputError):
        read_discovery_output(out)
