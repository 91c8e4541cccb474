"""Event 1008 is read against its documented message text (user, AD site, CAS) in English
and German, not by an assumed position of its insertion strings; the insertion strings are
the second source. The expected texts are written out here from Microsoft's pages, and the
lab renders its own copy (scanner/lab/eventlog.py): neither is derived from the parser."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from test_collector_reader import document

import scanner.collect as collector
from scanner.collect.collected import RefusedLogon
from scanner.collect.reader import read_collector_output
from scanner.lab.eventlog import event_message
from scanner.lab.fleet import load_fleet
from scanner.lab.serve import demo_fleet_path
from scanner.lab.simhost import collector_document
from scanner.parse.events import read_refused_logon
from scanner.parse.observe import interpret

# Microsoft, "Event ID 1008" for Exchange 2007 POP3/IMAP4 (TechNet cc671173), word for word.
DOCUMENTED = (
    'User "<User Name>" was prevented connecting to his/her mailbox because the Mailbox Server resides '
    "in a different Active Directory site (<site name>) than the Client Access Server (<CAS name>) to "
    "which he/she connected. Either arrange for the Client Access server and the Mailbox server to "
    "reside in the same site, or change the configuration setting of AllowCrossSiteSessions to true."
)
# The same page in German (de-de, cc671173), as docs/exchange-facts.md quotes it.
DOCUMENTED_DE = (
    'Es wurde verhindert, dass der Benutzer "<Benutzername>" eine Verbindung mit seinem Postfach '
    "herstellt, weil sich der Postfachserver an einem anderen Active Directory-Standort (<Standort>) "
    "als der Clientzugriffsserver (<Clientzugriffsserver>), mit dem eine Verbindung hergestellt wurde, "
    "befindet. Platzieren Sie den Clientzugriffsserver und den Postfachserver am gleichen Standort, "
    'oder ändern Sie die Konfigurationseinstellung von "AllowCrossSiteSessions" auf TRUE.'
)
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_the_lab_writes_the_documented_message() -> None:
    assert event_message("<User Name>", "<site name>", "<CAS name>") == DOCUMENTED
    assert event_message("<Benutzername>", "<Standort>", "<Clientzugriffsserver>", "de") == DOCUMENTED_DE


def documented(language: str, user: str, site: str, cas: str) -> str:
    """The documented text with these values, built from this file's copy of the page."""
    if language == "de":
        return (DOCUMENTED_DE.replace("<Benutzername>", user).replace("<Standort>", site)
                .replace("<Clientzugriffsserver>", cas))
    return DOCUMENTED.replace("<User Name>", user).replace("<site name>", site).replace("<CAS name>", cas)


@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize("case", [str, str.upper, str.lower])
def test_both_languages_are_read_in_any_case(language: str, case: object) -> None:
    assert callable(case)
    text = case(documented(language, "CONTOSO\\jörg", "Hamburg", "CAS01"))
    said = read_refused_logon(RefusedLogon("MSExchangePOP3", NOW, (), text))
    assert (said.user.casefold(), said.mailbox_site.casefold(), said.cas.casefold(), said.source, said.language) == (
        "contoso\\jörg", "hamburg", "cas01", "message", language)


def test_a_german_lab_server_names_user_site_and_cas_without_insertion_strings() -> None:
    """Issue 15: on a German server the user had no domain prefix and the site was lost."""
    fleet = load_fleet(demo_fleet_path())
    server = replace(fleet.server("CAS01"), language="de", computer="EXCAS01")
    host = read_collector_output(collector_document(server, {}, NOW).encode("utf-8"))
    assert host.events and all(e.message.startswith("Es wurde verhindert") for e in host.events)
    for event in host.events:
        bare = replace(event, insertions=("jörg", "Hamburg", "unknown"))  # nothing to tell them apart
        said = read_refused_logon(bare, "")
        assert (said.source, said.language, said.cas) == ("message", "de", "EXCAS01")
        assert said.user and said.mailbox_site


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=3000), st.sampled_from(["", 'user "', 'Es wurde verhindert, dass der Benutzer "',
                                                  '" was prevented connecting to his/her mailbox because the '
                                                  "mailbox server resides in a different active directory site (",
                                                  ") than the client access server (", ") to which he/she connected"]))
def test_hostile_messages_never_raise(noise: str, piece: str) -> None:
    text = (piece + noise) * 3
    said = read_refused_logon(RefusedLogon("MSExchangeIMAP4", NOW, (noise,), text), noise[:5])
    assert said.source in ("message", "insertions", "none")
    assert max(len(said.user), len(said.mailbox_site), len(said.cas)) <= 512


def observed(events: str, computer: str = "CAS01") -> list[tuple[str, str]]:
    out = document(events=events).replace(b'computer="CAS01"', f'computer="{computer}"'.encode())
    host = read_collector_output(out)
    obs = interpret("CAS01", "127.0.0.1", None, host, NOW, NOW)
    return [(r.user, r.mailbox_site) for r in obs.protocols["imap4"].refused_logons]


def event(insertions: tuple[str, ...], message: str) -> str:
    return ('<event source="MSExchangeIMAP4" id="1008" at="2026-11-21T09:00:00Z">'
            + "".join(f"<insertion>{escape(i)}</insertion>" for i in insertions)
            + f"<message>{escape(message)}</message></event>")


def test_german_user_of_the_demo_fleet_through_the_collector_document() -> None:
    fleet = load_fleet(demo_fleet_path())
    server = fleet.server("CAS01")
    host = read_collector_output(collector_document(server, {}, NOW).encode("utf-8"))
    obs = interpret("CAS01", "127.0.0.1", None, host, NOW, NOW)
    users = {(r.user, r.mailbox_site) for p in obs.protocols.values() for r in p.refused_logons}
    assert ("CONTOSO\\jörg", "Hamburg") in users
    assert all(read_refused_logon(e).cas == (server.computer or server.name) for e in host.events)


def test_insertion_strings_in_another_order_do_not_matter() -> None:
    message = event_message("CONTOSO\\jörg", "Hamburg", "CAS01")
    for order in [("CAS01", "Hamburg", "CONTOSO\\jörg"), ("Hamburg", "CONTOSO\\jörg", "CAS01"), ()]:
        assert observed(event(order, message)) == [("CONTOSO\\jörg", "Hamburg")]


def test_without_the_documented_text_the_insertions_are_told_apart_by_value() -> None:
    missing = ("The description for Event ID ( 1008 ) in Source ( MSExchangeIMAP4 ) cannot be found. "
               "The following information is part of the event: Hamburg, CAS01.contoso.local, CONTOSO\\jörg.")
    assert observed(event(("Hamburg", "CAS01.contoso.local", "CONTOSO\\jörg"), missing)) == [
        ("CONTOSO\\jörg", "Hamburg")]
    # values that cannot be told apart stay unknown: no guess by position
    assert observed(event(("Hamburg", "Berlin", "CAS07"), missing)) == [("", "")]


@pytest.mark.parametrize(
    ("user", "site", "cas"),
    [("CONTOSO\\jörg", "Hamburg", "CAS01"),
     ('CONTOSO\\o"brien', "Site (East) 2", "CAS-01"),
     ("jörg.müller@contoso.de", "Köln", "cas01.contoso.local")],
)
@pytest.mark.parametrize("language", ["en", "de"])
def test_values_come_from_the_text_even_when_wrapped(user: str, site: str, cas: str, language: str) -> None:
    text = documented(language, user, site, cas).replace(" because the", "\r\nbecause  the")
    text = text.replace(" eine Verbindung mit", "\r\neine  Verbindung\tmit")
    said = read_refused_logon(RefusedLogon("MSExchangePOP3", NOW, (), text))
    assert (said.user, said.mailbox_site, said.cas, said.source) == (user, site, cas, "message")


def test_the_collector_brings_back_message_text_and_insertion_strings() -> None:
    script = collector.collector_script()
    stage = script[script.index("$stage = 'events'"):script.index("$stage = 'output'")]
    assert "$em = [string]$e.Message" in stage and "$rs = $e.ReplacementStrings" in stage
    assert "'<message>' + (X $em) + '</message>'" in stage
    xs = "{http://www.w3.org/2001/XMLSchema}"
    schema = etree.parse(str(collector.schema_path()))
    (event,) = [e for e in schema.iter(f"{xs}element") if e.get("name") == "event"]
    children = {e.get("name"): e for e in event.iter(f"{xs}element") if e is not event}
    assert children["message"].get("minOccurs") in (None, "1")  # required: the first source
    assert children["insertion"].get("maxOccurs") == "unbounded"


VALUE = st.text(alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=60)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["en", "de"]), VALUE, VALUE, VALUE)
def test_any_values_written_by_the_lab_are_read_back(language: str, user: str, site: str, cas: str) -> None:
    """Values without white space (which rendering may re-wrap) come back exactly, whatever
    quotes, parentheses or letters they hold, from the lab's rendering in either language."""
    said = read_refused_logon(RefusedLogon("MSExchangePOP3", NOW, (), event_message(user, site, cas, language)))
    assert (said.user, said.mailbox_site, said.cas, said.language) == (user, site, cas, language)
