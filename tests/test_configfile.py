"""Effective AllowCrossSiteSessions of collected POP3/IMAP4 config files, read as .NET 2.0 does."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from scanner.parse.configfile import (
    KEY,
    ConfigReading,
    KeyEntry,
    parse_dotnet_bool,
    read_config,
)
from scanner.util import testhooks
from scanner.util.xmlsafe import (
    MAX_XML_BYTES,
    UntrustedXMLError,
    hardened_parser,
    parse_untrusted,
)

CONFIGS = Path(__file__).parent / "configs"
STATUSES = {"ok", "missing", "malformed", "invalid-value", "unreadable"}


def read_fixture(name: str) -> ConfigReading:
    return read_config((CONFIGS / name).read_bytes())


def exchange_file(settings_xml: str, *, around: str = "") -> bytes:
    """A POP3 config file shaped like the one Exchange 2007 setup writes."""
    return (
        '<?xml version="1.0" encoding="utf-8" ?>\n<configuration>\n'
        '  <runtime>\n    <generatePublisherEvidence enabled="false" />\n  </runtime>\n'
        "  <appSettings>\n"
        '    <add key="ProtocolLog" value="false" />\n'
        f"{settings_xml}"
        "  </appSettings>\n"
        f"{around}"
        "</configuration>\n"
    ).encode()


# (fixture, status, value, value_source, raw_value)
EFFECTIVE = [
    ("default_false.config", "ok", False, "file", "false"),
    ("enabled_true.config", "ok", True, "file", "true"),
    ("upper_true.config", "ok", True, "file", "TRUE"),
    ("spaced_true.config", "ok", True, "file", " True\t"),
    ("value_yes.config", "invalid-value", None, "file", "yes"),
    ("value_one.config", "invalid-value", None, "file", "1"),
    ("value_empty.config", "invalid-value", None, "file", ""),
    ("no_value_attribute.config", "invalid-value", None, "file", ""),
    ("key_absent.config", "ok", False, "default", None),
    ("key_lowercase.config", "ok", True, "file", "true"),
    ("key_leading_space.config", "ok", False, "default", None),
    ("duplicate_true_then_false.config", "ok", False, "file", "false"),
    ("duplicate_false_then_true.config", "ok", True, "file", "true"),
    ("remove_after_add.config", "ok", False, "default", None),
    ("clear_after_add.config", "ok", False, "default", None),
    ("add_after_clear.config", "ok", True, "file", "true"),
    ("comment_only.config", "ok", False, "default", None),
    ("other_sections.config", "ok", False, "file", "false"),
    ("text_lookalikes.config", "ok", False, "file", "false"),
    ("nested_in_runtime.config", "ok", False, "default", None),
    ("xmlns_configuration.config", "ok", True, "file", "true"),
    ("location_dot.config", "ok", True, "file", "true"),
    ("location_other_path.config", "ok", False, "file", "false"),
    # a referenced file that was not collected: unknown, never the main file's value
    ("file_attribute.config", "unreadable", None, "file", None),
    ("config_source.config", "unreadable", None, "file", None),
    ("utf8_bom.config", "ok", True, "file", "true"),
    ("utf16le_bom.config", "ok", True, "file", "true"),
    ("utf16be_bom.config", "ok", True, "file", "true"),
    ("windows1252_comment.config", "ok", True, "file", "true"),
    ("undeclared_element.config", "malformed", None, "file", None),
    ("foreign_namespace.config", "malformed", None, "file", None),
    ("root_wrong_case.config", "malformed", None, "file", None),
    ("duplicate_section.config", "malformed", None, "file", None),
    ("attribute_wrong_case.config", "malformed", None, "file", None),
    ("unclosed_tag.config", "malformed", None, "file", None),
    ("truncated.config", "malformed", None, "file", None),
    ("binary_garbage.config", "malformed", None, "file", None),
    ("empty.config", "malformed", None, "file", None),
]


def test_every_fixture_is_covered() -> None:
    assert {row[0] for row in EFFECTIVE} == {p.name for p in CONFIGS.iterdir()}
    assert len(EFFECTIVE) >= 25


@pytest.mark.parametrize(("name", "status", "value", "source", "raw"), EFFECTIVE)
def test_effective_value(name: str, status: str, value: bool | None, source: str, raw: str | None) -> None:
    reading = read_fixture(name)
    assert (reading.status, reading.value, reading.value_source, reading.raw_value) == (
        status,
        value,
        source,
        raw,
    )
    # a sentence for every non-ok status or unknown value
    needs_detail = status != "ok" or value is None
    assert bool(reading.detail) == needs_detail


def test_realistic_default_file_reports_its_entry() -> None:
    reading = read_fixture("default_false.config")
    assert reading.encoding == "utf-8"
    assert reading.entries == (KeyEntry("add", "AllowCrossSiteSessions", "false", 9),)
    assert reading.notes == ()


def test_key_in_other_letter_case_keeps_the_spelling_as_written() -> None:
    reading = read_fixture("key_lowercase.config")
    assert [e.key for e in reading.entries] == ["allowcrosssitesessions"]


@pytest.mark.parametrize(
    ("name", "note"),
    [
        ("duplicate_true_then_false.config", "duplicate: key set 2 times"),
        ("duplicate_false_then_true.config", "duplicate: key set 2 times"),
        ("remove_after_add.config", "removed: line 10"),
        ("clear_after_add.config", "cleared: line 10"),
        ("add_after_clear.config", "cleared: line 9"),
        ("file_attribute.config", "file=override.config"),
        ("config_source.config", "configSource=appSettings.config"),
    ],
)
def test_xs007_evidence_notes(name: str, note: str) -> None:
    assert note in read_fixture(name).notes


def test_plain_files_carry_no_xs007_notes() -> None:
    for name in ("enabled_true.config", "key_absent.config", "other_sections.config", "comment_only.config"):
        assert read_fixture(name).notes == (), name


def test_duplicate_entries_are_listed_in_document_order() -> None:
    reading = read_fixture("duplicate_true_then_false.config")
    assert [(e.op, e.key, e.value) for e in reading.entries] == [
        ("add", "AllowCrossSiteSessions", "true"),
        ("add", "ALLOWCROSSSITESESSIONS", "false"),
    ]


def test_remove_and_clear_are_recorded_as_operations() -> None:
    assert [e.op for e in read_fixture("remove_after_add.config").entries] == ["add", "remove"]
    assert [e.op for e in read_fixture("clear_after_add.config").entries] == ["add", "clear"]


def test_redirects_explain_themselves() -> None:
    source = read_fixture("config_source.config")
    assert "appSettings.config" in source.detail and "unknown" in source.detail
    file_attr = read_fixture("file_attribute.config")
    assert "override.config" in file_attr.detail


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("utf8_bom.config", "utf-8-sig"),
        ("utf16le_bom.config", "utf-16-le"),
        ("utf16be_bom.config", "utf-16-be"),
        ("windows1252_comment.config", "windows-1252"),
        ("enabled_true.config", "utf-8"),
    ],
)
def test_encoding_is_detected(name: str, encoding: str) -> None:
    assert read_fixture(name).encoding == encoding


def test_utf32_with_bom_is_read() -> None:
    text = exchange_file(f'    <add key="{KEY}" value="true" />\n').decode()
    reading = read_config(b"\xff\xfe\x00\x00" + text.replace('encoding="utf-8"', 'encoding="utf-32"').encode("utf-32-le"))
    assert (reading.status, reading.value, reading.encoding) == ("ok", True, "utf-32-le")


def test_declaration_contradicting_the_bytes_is_malformed() -> None:
    data = exchange_file(f'    <add key="{KEY}" value="true" />\n').replace(b'encoding="utf-8"', b'encoding="utf-16"')
    reading = read_config(data)
    assert (reading.status, reading.value) == ("malformed", None)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("undeclared_element.config", "unrecognized configuration section 'AllowCrossSiteSessions'"),
        ("foreign_namespace.config", "urn:example:not-dotnet"),
        ("root_wrong_case.config", "<Configuration>"),
        ("duplicate_section.config", "more than once"),
        ("attribute_wrong_case.config", "'Value'"),
        ("empty.config", "empty"),
    ],
)
def test_malformed_detail_names_the_reason(name: str, fragment: str) -> None:
    assert fragment in read_fixture(name).detail


@pytest.mark.parametrize(
    ("settings_xml", "around", "status", "value"),
    [
        # things .NET refuses inside appSettings
        ("    <add value=\"true\" />\n", "", "malformed", None),
        (f'    <remove key="{KEY}" value="true" />\n', "", "malformed", None),
        ("    <clear key=\"x\" />\n", "", "malformed", None),
        (f'    <Add key="{KEY}" value="true" />\n', "", "malformed", None),
        (f'    <add key="{KEY}" value="true">yes</add>\n', "", "malformed", None),
        ("    stray text\n", "", "malformed", None),
        (f'    <appSettings><add key="{KEY}" value="true" /></appSettings>\n', "", "malformed", None),
        # allowed: lock attributes, comments, processing instructions, remove of an absent key
        (f'    <add key="{KEY}" value="true" lockItem="true" />\n', "", "ok", True),
        (f'    <!-- x -->\n    <?pi data?>\n    <add key="{KEY}" value="true" />\n', "", "ok", True),
        ("    <remove key=\"Unrelated\" />\n", "", "ok", False),
        # culture-insensitive ordinal: a key with a soft hyphen is another key to the
        # collection but the same name to ConfigurationManager.AppSettings: values are joined
        (f'    <add key="{KEY}" value="true" />\n    <add key="Allow\u00adCrossSiteSessions" value="true" />\n', "", "invalid-value", None),
        # the structure around the section
        (f'    <add key="{KEY}" value="true" />\n', "  <location path=\".\"><appSettings /></location>\n", "malformed", None),
        (f'    <add key="{KEY}" value="true" />\n', "  <location path=\"./x\"><appSettings /></location>\n", "malformed", None),
        (f'    <add key="{KEY}" value="true" />\n', "  <location path=\"x\" foo=\"1\" />\n", "malformed", None),
        (f'    <add key="{KEY}" value="true" />\n', "  <runtime />\n", "ok", True),
        (f'    <add key="{KEY}" value="true" />\n', "  <system.diagnostics /><system.diagnostics />\n", "malformed", None),
        (f'    <add key="{KEY}" value="true" />\n', "  <configSections />\n", "malformed", None),
        (f'    <add key="{KEY}" value="true" />\n', "  <system.net><bogus /></system.net>\n", "malformed", None),
        (f'    <add key="{KEY}" value="true" />\n', "  text between sections\n", "malformed", None),
        (f'    <add key="{KEY}" value="true" />\n', "  <connectionStrings><x/></connectionStrings>\n", "ok", True),
    ],
)
def test_dotnet_structure_rules(settings_xml: str, around: str, status: str, value: bool | None) -> None:
    reading = read_config(exchange_file(settings_xml, around=around))
    assert (reading.status, reading.value) == (status, value), reading.detail


def test_joined_value_is_what_the_service_would_see() -> None:
    reading = read_config(
        exchange_file(f'    <add key="{KEY}" value="true" />\n    <add key="Allow\u00adCrossSiteSessions" value="false" />\n')
    )
    assert reading.raw_value == "true,false"
    assert "duplicate: key set 2 times" in reading.notes


def test_protected_section_is_unknown_not_default() -> None:
    data = (
        b'<?xml version="1.0"?><configuration><appSettings configProtectionProvider="DataProtectionConfigurationProvider">'
        b"<EncryptedData><CipherData><CipherValue>AQAAANCMnd8</CipherValue></CipherData></EncryptedData>"
        b"</appSettings></configuration>"
    )
    reading = read_config(data)
    # an unknown value is never status ok: XS-006 carries the reason into every report
    assert (reading.status, reading.value, reading.value_source) == ("unreadable", None, "file")
    assert "encrypted" in reading.detail
    assert reading.notes == ("configProtectionProvider=DataProtectionConfigurationProvider",)


def test_config_source_with_content_is_refused() -> None:
    data = b'<configuration><appSettings configSource="a.config"><add key="x" value="y"/></appSettings></configuration>'
    assert read_config(data).status == "malformed"


def test_missing_file() -> None:
    reading = read_config(None, exists=False)
    assert (reading.status, reading.value, reading.raw_value) == ("missing", None, None)


@pytest.mark.parametrize(("content", "error"), [(None, ""), (b"<configuration/>", "Access to the path is denied.")])
def test_unreadable(content: bytes | None, error: str) -> None:
    reading = read_config(content, exists=True, error=error)
    assert (reading.status, reading.value) == ("unreadable", None)
    assert reading.detail


def test_collector_size_refusal_is_unreadable_too_large() -> None:
    reading = read_config(None, error="too-large")
    assert reading.status == "unreadable" and "too large" in reading.detail


def test_oversize_file_is_unreadable_and_fast() -> None:
    padding = "<!-- " + "x" * (2 * 1024 * 1024) + " -->\n"
    data = exchange_file(f'    <add key="{KEY}" value="true" />\n', around=padding)
    assert len(data) > 2 * 1024 * 1024
    started = time.perf_counter()
    reading = read_config(data)
    assert time.perf_counter() - started < 0.5
    assert (reading.status, reading.value) == ("unreadable", None)
    assert "too large" in reading.detail


def test_file_just_under_the_cap_is_read() -> None:
    body = exchange_file(f'    <add key="{KEY}" value="true" />\n')
    data = body + b"<!--" + b"x" * (MAX_XML_BYTES - len(body) - 7) + b"-->"
    assert len(data) == MAX_XML_BYTES
    assert read_config(data).value is True


# --- hostile input -------------------------------------------------------------------


def test_external_entity_to_a_local_file_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("S3CRET-MARKER-7f1c")
    data = (
        f'<?xml version="1.0"?>\n<!DOCTYPE configuration [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>\n'
        f'<configuration><appSettings><add key="{KEY}" value="&xxe;" /></appSettings></configuration>'
    ).encode()
    in_text = data.replace(f'<add key="{KEY}" value="&xxe;" />'.encode(), b"&xxe;")
    for document in (data, in_text):
        reading = read_config(document)
        assert (reading.status, reading.value) == ("malformed", None)
        assert "S3CRET" not in repr(reading)
    assert "DOCTYPE" in read_config(in_text).detail
    # even with the DOCTYPE let through, the hardened parser does not resolve the entity
    root = parse_untrusted(in_text, forbid_doctype=False)
    assert b"S3CRET" not in etree.tostring(root)


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        body = b'<!ENTITY % leak "<!ENTITY x \'LEAKED-MARKER\'>"> %leak;'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    # the counter works: a real request is seen (so zero below means nothing was fetched)
    urllib.request.urlopen(f"{base}/probe", timeout=5).read()
    assert hits == ["/probe"]
    hits.clear()
    try:
        yield base, hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_external_dtd_and_parameter_entities_are_not_fetched(loopback_server: tuple[str, list[str]]) -> None:
    base, hits = loopback_server
    documents = [
        f'<?xml version="1.0"?><!DOCTYPE configuration SYSTEM "{base}/ext.dtd"><configuration>&x;</configuration>',
        f'<?xml version="1.0"?><!DOCTYPE configuration [<!ENTITY % p SYSTEM "{base}/param.dtd"> %p;]>'
        "<configuration>&x;</configuration>",
        f'<?xml version="1.0"?><!DOCTYPE configuration [<!ENTITY g SYSTEM "{base}/general.xml">]>'
        f'<configuration><appSettings><add key="{KEY}" value="&g;" /></appSettings></configuration>',
    ]
    for text in documents:
        reading = read_config(text.encode())
        assert (reading.status, reading.value) == ("malformed", None)
        assert "LEAKED" not in repr(reading)
        try:
            root = parse_untrusted(text.encode(), forbid_doctype=False)
        except UntrustedXMLError:
            continue
        assert b"LEAKED" not in etree.tostring(root)
    assert hits == []


def test_billion_laughs_does_not_expand() -> None:
    levels = ['<!ENTITY lol0 "lollollollollollollollollollol">']
    for i in range(1, 10):
        levels.append(f'<!ENTITY lol{i} "' + f"&lol{i - 1};" * 10 + '">')
    data = (
        '<?xml version="1.0"?><!DOCTYPE configuration [' + "".join(levels) + "]>"
        f'<configuration><appSettings><add key="{KEY}" value="&lol9;" /></appSettings></configuration>'
    ).encode()
    in_text = data.replace(f'<add key="{KEY}" value="&lol9;" />'.encode(), b"&lol9;")
    started = time.perf_counter()
    for document in (data, in_text):
        reading = read_config(document)
        assert (reading.status, reading.value) == ("malformed", None)
        assert len(repr(reading)) < 2_000
    # with the DOCTYPE let through: refused, or at most kept as an unexpanded reference
    for document in (data, in_text):
        try:
            root = parse_untrusted(document, forbid_doctype=False)
        except UntrustedXMLError as exc:
            assert "amplification" in exc.reason or "entity" in exc.reason.lower()
        else:
            assert len(etree.tostring(root)) < 10_000
    assert time.perf_counter() - started < 1.0


def test_hardened_parser_settings_and_freshness() -> None:
    first, second = hardened_parser(), hardened_parser()
    assert first is not second
    doc = b'<!DOCTYPE r [<!ENTITY e "expanded">]><r>&e;</r>'
    assert etree.tostring(etree.fromstring(doc, first)) == b"<r>&e;</r>"
    # overrides are honoured (and show the default really is off)
    assert etree.tostring(etree.fromstring(doc, hardened_parser(resolve_entities=True))) == b"<r>expanded</r>"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<a>" + b"x" * 100, "not well-formed"),
        (b"<!DOCTYPE a><a/>", "DOCTYPE"),
        (b"   ", "empty"),
        (b"<a/>", None),
    ],
)
def test_parse_untrusted_reasons(data: bytes, reason: str | None) -> None:
    if reason is None:
        assert parse_untrusted(data).tag == "a"
        return
    with pytest.raises(UntrustedXMLError) as info:
        parse_untrusted(data)
    assert reason in info.value.reason


def test_parse_untrusted_size_cap() -> None:
    with pytest.raises(UntrustedXMLError, match="too large"):
        parse_untrusted(b"<a>" + b"x" * 100 + b"</a>", max_bytes=50)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    reading = read_config(data)
    assert isinstance(reading, ConfigReading)
    assert reading.status in STATUSES
    assert not reading.detail.startswith("internal")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(max_size=40), st.integers(min_value=0, max_value=400))
def test_damaged_real_files_never_raise(cut: int, junk: bytes, at: int) -> None:
    base = (CONFIGS / "other_sections.config").read_bytes()
    data = base[:at] + junk + base[at + cut % 20 :]
    reading = read_config(data)
    assert reading.status in STATUSES
    assert not reading.detail.startswith("internal")
    if reading.status != "ok":
        assert reading.value is None
    if reading.value_source == "default":
        assert (reading.status, reading.value, reading.raw_value) == ("ok", False, None)


# --- Boolean.TryParse ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("False", False),
        ("TRUE", True),
        (" true ", True),
        ("\ttrue\r\n", True),
        ("true\x00", True),
        ("\u3000false\u00a0", False),
        ("\ufefftrue", True),
        ("yes", None),
        ("1", None),
        ("", None),
        ("on", None),
        ("t rue", None),
        ("true,true", None),
        ("\u2028true", None),  # not in .NET 2.0's String.WhitespaceChars
        ("ｔｒｕｅ", None),  # fullwidth letters are not "true" ordinally
        (None, None),
    ],
)
def test_parse_dotnet_bool(text: str | None, expected: bool | None) -> None:
    assert parse_dotnet_bool(text) is expected


def test_a_bug_in_the_evaluator_raises_instead_of_reading_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 item 7: the evaluator's own exception is not a property of the file."""
    monkeypatch.setenv(testhooks.ENV, "config")
    with pytest.raises(RuntimeError, match="stage 'config'"):
        read_config(b'<?xml version="1.0"?><configuration><appSettings/></configuration>')
