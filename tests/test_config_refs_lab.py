"""Referenced config files end to end: the lab's [server.extra_files] served to the
collector as Windows would, read back by the reader, applied by the parser, and reported
(unknown with its reason where the file was not read; no baseline rule on an unknown)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import pytest
from labfleet import cas_audit_here, running

from scanner.collect.reader import read_collector_output
from scanner.errors import CollectorOutputError, ConfigError
from scanner.lab.fleet import load_fleet
from scanner.lab.simhost import collector_document
from scanner.parse.observe import ProtocolObservation, interpret

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def config(attrs: str, body: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<configuration>\n'
        f"  <appSettings{attrs}>{body}</appSettings>\n</configuration>\n"
    )


def setting(value: str) -> str:
    return f'<add key="AllowCrossSiteSessions" value="{value}" />'


def toml_text(text: str) -> str:
    return "'''" + text + "'''"


# (server, protocol) -> (config text, expected allow_cross_site, config_status, a fragment of config_detail)
CASES = {
    ("REF01", "pop3"): (config(' file="appSettings.extra.config"', setting("false")), True, "ok", ""),
    ("REF01", "imap4"): (config(' configSource="imap4.appSettings.config"'), False, "ok", ""),
    ("REF02", "pop3"): (config(' file="absent.config"', setting("true")), True, "ok", ""),
    ("REF02", "imap4"): (config(' file="..\\outside.config"', setting("false")), None, "unreadable",
                         "outside the PopImap folder"),
    ("REF03", "pop3"): (config(' configSource="absent.config"'), None, "malformed", "does not exist"),
    ("REF03", "imap4"): (config(' configSource="sub/x.config"'), None, "malformed", "contains '/'"),
}
EXTRA = {
    "REF01": {
        "appSettings.extra.config": '<appSettings><add key="AllowCrossSiteSessions" value="true"/></appSettings>',
        "imap4.appSettings.config": "<appSettings>" + setting("false") + "</appSettings>",
    },
    "REF02": {"outside.config": "<appSettings>" + setting("true") + "</appSettings>"},
}


def fleet_file(folder: Path, base: str = "127.0.151.1") -> Path:
    lines = ["[lab]", 'username = "auditor"', 'password = "lab-password"', 'auth = "ntlm"',
             f'base_address = "{base}"', "port = 0", ""]
    for server in ("REF01", "REF02", "REF03"):
        lines += ["[[server]]", f'name = "{server}"', 'site = "Berlin"', 'build = "8.3.83.6"']
        for protocol in ("pop3", "imap4"):
            text = CASES[(server, protocol)][0]
            lines += [f"[server.{protocol}]", f"config = {toml_text(text)}", 'service = "Running"']
        if server in EXTRA:
            lines.append("[server.extra_files]")
            lines += [f'"{name}" = {toml_text(text)}' for name, text in EXTRA[server].items()]
        lines.append("")
    path = folder / "fleet.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def observed(folder: Path) -> dict[tuple[str, str], ProtocolObservation]:
    """What the scanner concludes from the lab's collector documents (no network)."""
    fleet = load_fleet(fleet_file(folder))
    out = {}
    for server in fleet.servers:
        host = read_collector_output(collector_document(server, {}, NOW).encode())
        obs = interpret(server.name, server.address, server.site, host, NOW, NOW)
        for protocol, p in obs.protocols.items():
            out[(server.name, protocol)] = p
    return out


def test_the_fleet_key_holds_exact_text(tmp_path: Path) -> None:
    fleet = load_fleet(fleet_file(tmp_path))
    assert fleet.server("REF01").extra_files["appSettings.extra.config"] == EXTRA["REF01"][
        "appSettings.extra.config"].encode()
    assert fleet.server("REF03").extra_files == {}


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ('"sub\\\\x.config" = "<appSettings/>"', "must be a file name"),
        ('"x.config." = "<appSettings/>"', "must be a file name"),
        ('"Microsoft.Exchange.Pop3.exe.config" = "<appSettings/>"', "is a protocol's config file"),
        ('"a.config" = "<appSettings/>"\n"A.CONFIG" = "<appSettings/>"', "case-insensitive"),
        ('"a.config" = 1', "exact text"),
    ],
)
def test_bad_extra_files_are_refused(tmp_path: Path, entry: str, fragment: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[lab]\nusername = "a"\npassword = "b"\nauth = "ntlm"\n[[server]]\nname = "X"\n'
                    f"[server.extra_files]\n{entry}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="extra_files") as err:
        load_fleet(path)
    assert fragment in str(err.value)


@pytest.mark.parametrize(("key", "case"), list(CASES.items()))
def test_the_collector_document_gives_the_effective_value(tmp_path: Path, key: tuple[str, str],
                                                          case: tuple[str, bool | None, str, str]) -> None:
    p = observed(tmp_path)[key]
    _text, value, status, fragment = case
    assert (p.allow_cross_site, p.config_status) == (value, status)
    assert fragment in p.detail
    assert (p.detail != "") == (status != "ok")


def test_a_collector_that_cannot_read_the_config_as_xml_says_why(tmp_path: Path) -> None:
    fleet = load_fleet(fleet_file(tmp_path))
    server = fleet.server("REF01")
    pop3 = server.protocols["pop3"]
    doctype = b'<!DOCTYPE x [<!ENTITY a "b">]>\n' + (pop3.config_bytes or b"").split(b"\n", 1)[1]
    server = replace(server, protocols={**server.protocols, "pop3": replace(pop3, config_bytes=doctype)})
    host = read_collector_output(collector_document(server, {}, NOW).encode())
    assert "DTD is prohibited" in host.configs["pop3"].references_error
    assert host.configs["pop3"].references == ()
    assert host.errors == ()  # the reference stage's failure is the element's, not a stage error


@pytest.mark.slow
def test_scan_reports_referenced_values_and_unknowns_with_their_reason(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'history.db'}"
    fleet = load_fleet(fleet_file(tmp_path))
    with running(fleet, tmp_path) as (_lab, inventory):
        scan = cas_audit_here("scan", "--inventory", str(inventory), db=db)
    assert scan.returncode == 1, scan.stderr  # findings (XS-001 on REF01 pop3, XS-006), all scanned
    report = cas_audit_here("report", "--format", "json", db=db)
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    servers = {s["name"]: s for s in data["servers"]}
    for (server, protocol), (_text, value, status, fragment) in CASES.items():
        p = servers[server]["protocols"][protocol]
        assert (p["allow_cross_site"], p["config_status"]) == (value, status), (server, protocol)
        assert fragment in p["config_detail"]
    findings = {(f["rule"], f["server"], f["protocol"]) for f in data["findings"]}
    # the value from the file= target (true) is known: the baseline (false) fires on it
    assert ("XS-001", "REF01", "pop3") in findings
    # unknown or refused values: XS-006 with the reason, and no rule that needs the value
    for server, protocol in [("REF02", "imap4"), ("REF03", "pop3"), ("REF03", "imap4")]:
        assert ("XS-006", server, protocol) in findings
        assert not {r for r, s, pr in findings if s == server and pr == protocol} & {"XS-001", "XS-002"}
    messages = {(f["rule"], f["server"], f["protocol"]): f["message"] for f in data["findings"]}
    assert "outside the PopImap folder" in messages[("XS-006", "REF02", "imap4")]
    # pop3 and imap4 of REF02/REF03 are not compared where one side is unknown
    assert not {s for r, s, _p in findings if r == "XS-008"} & {"REF02", "REF03"}
    # the referenced file as collected: what it is, what became of it, its hash
    applied = servers["REF01"]["protocols"]["pop3"]["config_reference"]
    extra = EXTRA["REF01"]["appSettings.extra.config"].encode()
    assert (applied["attribute"], applied["value"], applied["outcome"], applied["sha256"]) == (
        "file", "appSettings.extra.config", "applied", hashlib.sha256(extra).hexdigest())
    refused = servers["REF02"]["protocols"]["imap4"]["config_reference"]
    assert (refused["outcome"], refused["error"], refused["sha256"]) == ("unknown", "refused-path", None)
    assert servers["REF03"]["protocols"]["pop3"]["config_reference"]["outcome"] == "refused"

    # the reason in the other formats and the other language
    book = tmp_path / "report.xlsx"
    assert cas_audit_here("report", "--format", "xlsx", "--lang", "de", "--out", str(book), db=db).returncode == 0
    sheet = openpyxl.load_workbook(book, read_only=True)["Nachweise"]
    rows = [[str(c) if c is not None else "" for c in row] for row in sheet.iter_rows(values_only=True)]
    header = rows[0]
    ref02 = next(r for r in rows if r[0] == "REF02" and r[2] == "IMAP4")
    why = header.index("Warum der Wert unbekannt oder unbrauchbar ist")
    # our own reason sentence in German (the file name as it stands), not the English of the JSON
    assert "außerhalb des PopImap-Ordners" in ref02[why] and "outside the PopImap folder" not in ref02[why]
    ref03 = next(r for r in rows if r[0] == "REF03" and r[2] == "POP3")
    assert ref03[why] == (".NET weist diese Datei ab: die configSource-Datei 'absent.config' existiert nicht "
                          "(Unable to open configSource file).")
    assert "keine Datei im Ordner PopImap selbst" in ref02[header.index("Mit file= / configSource= genannte Datei")]
    csv_de = cas_audit_here("report", "--format", "csv", "--lang", "de", "--out", "-", db=db)
    assert csv_de.returncode == 0, csv_de.stderr
    line = next(row for row in csv_de.stdout.splitlines() if "XS-006" in row and "REF02" in row)
    assert "außerhalb des PopImap-Ordners" in line and "outside the PopImap folder" not in line
    line = next(row for row in csv_de.stdout.splitlines() if "XS-006" in row and "REF03" in row and "POP3" in row)
    assert "die configSource-Datei 'absent.config' existiert nicht" in line

    # the referenced file byte for byte, as evidence; none where it was not read
    copy = tmp_path / "appSettings.extra.config"
    written = cas_audit_here("evidence", "--server", "REF01", "--protocol", "pop3", "--referenced", "--out", str(copy),
                        db=db)
    assert written.returncode == 0, written.stderr
    assert copy.read_bytes() == extra
    none = cas_audit_here("evidence", "--server", "REF02", "--protocol", "imap4", "--referenced", "--out",
                     str(tmp_path / "x.config"), db=db)
    assert none.returncode == 2 and "refused-path" in none.stderr


def _document(tmp_path: Path, name: str = "REF01") -> str:
    return collector_document(load_fleet(fleet_file(tmp_path)).server(name), {}, NOW)


def test_an_older_collector_without_configrefs_reads_as_not_looked_for(tmp_path: Path) -> None:
    text = re.sub(r"<configrefs .*?</configrefs>", "", _document(tmp_path))
    host = read_collector_output(text.encode())
    assert host.configs["pop3"].references is None
    obs = interpret("REF01", "a", "Berlin", host, NOW, NOW)
    assert (obs.protocols["pop3"].allow_cross_site, obs.protocols["pop3"].config_status) == (None, "unreadable")
    assert "this collector did not fetch" in obs.protocols["pop3"].detail


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('error="">', 'error="too-large">', "says was not read"),  # content for a file not read
        (' length="', ' length="9', "length says"),
        ('<configrefs protocol="imap4"', '<configrefs protocol="pop3"', "two configrefs"),
    ],
)
def test_the_reader_refuses_inconsistent_references(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    text = _document(tmp_path)
    start = text.index("<ref ")
    head, tail = text[:start], text[start:]
    if old.startswith("<configrefs"):
        tampered = text.replace(old, new, 1)
    else:
        tampered = head + tail.replace(old, new, 1)
    with pytest.raises(CollectorOutputError, match=fragment):
        read_collector_output(tampered.encode())


@pytest.mark.parametrize(
    ("value", "error", "exists"),
    [
        ("ok.config", "", True),
        ("OK.CONFIG", "", True),  # NTFS names are case-insensitive
        ("sub\\..\\ok.config", "", True),  # GetFullPath leaves it in the folder
        ("..\\PopImap\\ok.config", "", True),
        ("absent.config", "", False),
        ("..\\ok.config", "refused-path", False),
        ("sub\\ok.config", "refused-path", False),  # a subfolder: not the folder itself
        ("C:\\ok.config", "refused-path", False),
        ("\\\\server\\share\\ok.config", "refused-path", False),
        ("\\ok.config", "refused-path", False),
        ("ok.config:stream", "refused-path", False),
        ("a/ok.config", "refused-path", False),
        ("ok.config ", "refused-path", False),
        ("ok.config.", "refused-path", False),
        (" ok.config", "refused-path", False),
        ("nul.config", "refused-path", False),
        ("COM1", "refused-path", False),
        ("ok*.config", "refused-path", False),
        ("", "refused-path", False),
    ],
)
def test_the_lab_reads_only_files_of_the_popimap_folder(tmp_path: Path, value: str, error: str, exists: bool) -> None:
    fleet = load_fleet(fleet_file(tmp_path))
    server = fleet.server("REF03")
    text = config(f' file="{value}"', setting("false")).encode()
    server = replace(server, extra_files={"ok.config": b"<appSettings/>"},
                     protocols={**server.protocols, "pop3": replace(server.protocols["pop3"], config_bytes=text)})
    host = read_collector_output(collector_document(server, {}, NOW).encode())
    [ref] = host.configs["pop3"].references or ()
    assert (ref.value, ref.error, ref.exists) == (value, error, exists)
    assert (ref.content is not None) == (exists and not error)
    if ref.path:
        assert ref.path.lower().startswith(server.install_path.lower().rstrip("\\") + "\\clientaccess\\popimap\\")


def test_referenced_files_share_a_budget(tmp_path: Path) -> None:
    fleet = load_fleet(fleet_file(tmp_path))
    server = fleet.server("REF03")
    big = b"<appSettings><!--" + b"x" * 900_000 + b"--></appSettings>"
    protocols = {p: replace(server.protocols[p], config_bytes=config(f' file="{p}.config"').encode())
                 for p in ("pop3", "imap4")}
    # pop3's config names two files (the second in another element: a candidate too), imap4's one
    protocols["pop3"] = replace(protocols["pop3"], config_bytes=(
        b'<?xml version="1.0"?>\n<configuration><appSettings file="pop3.config"/>'
        b'<x><appSettings file="third.config"/></x></configuration>'))
    extra = {"pop3.config": big, "third.config": big, "imap4.config": big + b"<!-- -->"}
    server = replace(server, extra_files=extra, protocols={**server.protocols, **protocols})
    host = read_collector_output(collector_document(server, {}, NOW).encode())
    read = [r for c in host.configs.values() for r in c.references or () if r.content is not None]
    refused = [r for c in host.configs.values() for r in c.references or () if r.error == "too-large"]
    assert len(read) == 2 and sum(len(r.content or b"") for r in read) <= 2_097_152
    assert refused and all(r.exists and r.length for r in refused)
