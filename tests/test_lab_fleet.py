"""The lab fleet file: loading, defaults, exact config bytes, validation errors, upgrades."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import (
    DEFAULT_BUILD,
    DEFAULT_CONFIG_BYTES,
    DEFAULT_INSTALL_PATH,
    DEFAULT_STARTED,
    relocate_fleet,
    upgrade_server,
)
from scanner.lab.serve import demo_fleet_path
from scanner.parse.configfile import read_config

LAB = '[lab]\nusername = "auditor"\npassword = "lab-password"\n'


def write(tmp_path: Path, body: str, lab: str = LAB) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(lab + body, encoding="utf-8")
    return path


def one(tmp_path: Path, server: str, lab: str = LAB):
    return load_fleet(write(tmp_path, '[[server]]\nname = "CAS01"\n' + server, lab)).servers[0]


# -- the demo organisation ------------------------------------------------------------------


def test_demo_fleet_covers_the_cases_the_demo_promises() -> None:
    fleet = load_fleet(demo_fleet_path())
    names = [s.name for s in fleet.servers]
    assert len(names) >= 8 and {s.site for s in fleet.servers} == {"Berlin", "Hamburg"}
    assert [s.address for s in fleet.servers] == [f"127.0.1.{n}" for n in range(1, len(names) + 1)]
    assert (fleet.lab.auth, fleet.lab.username, fleet.lab.password) == ("ntlm", "auditor", "lab-password")

    def reading(name: str, protocol: str):
        return read_config(fleet.server(name).protocols[protocol].config_bytes,
                           exists=fleet.server(name).protocols[protocol].config_bytes is not None)

    german = fleet.server("CAS02")
    assert german.install_path == "C:\\Programme\\Microsoft\\Exchange Server\\"
    assert german.protocols["pop3"].config_bytes[:2] == b"\xff\xfe"
    assert (reading("CAS02", "pop3").value, reading("CAS02", "pop3").encoding) == (False, "utf-16-le")
    assert reading("CAS02", "imap4").value_source == "default"
    assert fleet.server("CAS03").registry_key == "v8.0\\Setup"
    duplicated = reading("CAS03", "pop3")
    assert duplicated.value is True and duplicated.notes  # the later "true" wins, noted
    assert reading("CAS04", "pop3").status == "malformed"
    assert fleet.server("CAS04").protocols["imap4"].service == "Stopped"
    assert fleet.server("CAS05").build == "8.1.240.6"
    assert reading("CAS05", "pop3").value is True and reading("CAS05", "imap4").value is True
    pending = fleet.server("CAS06").protocols["imap4"]
    assert pending.modified > pending.started and pending.service == "Running"
    assert fleet.server("CAS08").fault == "refuse"
    users = {logon.user for s in fleet.servers for p in s.protocols.values() for logon in p.refused_logons}
    assert "CONTOSO\\jörg" in users
    hamburg = [reading(s.name, p).value for s in fleet.servers if s.site == "Hamburg" and s.fault == ""
               for p in ("pop3", "imap4")]
    assert True in hamburg and False in hamburg
    assert reading("CAS09", "imap4").status == "missing"
    assert reading("CAS09", "pop3").status == "invalid-value"


def test_demo_config_file_is_read_as_exact_bytes() -> None:
    fleet = load_fleet(demo_fleet_path())
    on_disk = (demo_fleet_path().parent / "demo-configs" / "CAS04.Microsoft.Exchange.Pop3.exe.Config").read_bytes()
    assert fleet.server("CAS04").protocols["pop3"].config_bytes == on_disk


# -- defaults and encodings -----------------------------------------------------------------


def test_defaults_of_a_bare_server(tmp_path: Path) -> None:
    server = one(tmp_path, "")
    assert (server.build, server.install_path, server.registry_key, server.fault) == (
        DEFAULT_BUILD, DEFAULT_INSTALL_PATH, "Setup", "")
    for proto in server.protocols.values():  # as setup left it: default file, services not started
        assert proto.config_bytes == DEFAULT_CONFIG_BYTES
        assert (proto.service, proto.start_mode, proto.started) == ("Stopped", "Manual", None)
    assert read_config(DEFAULT_CONFIG_BYTES).value is False
    assert (server.language, server.application_log) == ("en", "readable")


def test_event_language_and_application_log_access_are_read(tmp_path: Path) -> None:
    server = one(tmp_path, 'language = "de"\napplication_log = "denied"\n')
    assert (server.language, server.application_log) == ("de", "denied")


def test_missing_file_and_running_service_defaults(tmp_path: Path) -> None:
    server = one(tmp_path, '[server.pop3]\nservice = "Running"\nstart_mode = "Auto"\n')
    pop3 = server.protocols["pop3"]
    assert pop3.config_bytes is None and pop3.modified is None
    assert pop3.started == DEFAULT_STARTED


@pytest.mark.parametrize(("encoding", "expected"), [
    ("utf-8", "<a>ö</a>\n".encode()),
    ("utf-8-sig", b"\xef\xbb\xbf" + "<a>ö</a>\n".encode()),
    ("utf-16", b"\xff\xfe" + "<a>ö</a>\n".encode("utf-16-le")),
])
def test_config_text_is_encoded_exactly(tmp_path: Path, encoding: str, expected: bytes) -> None:
    server = one(tmp_path, f"[server.pop3]\nencoding = \"{encoding}\"\nconfig = '''<a>ö</a>\n'''\n")
    assert server.protocols["pop3"].config_bytes == expected


def test_newline_crlf_converts_line_endings(tmp_path: Path) -> None:
    server = one(tmp_path, "[server.pop3]\nnewline = \"crlf\"\nconfig = '''<a>\n</a>\n'''\n")
    assert server.protocols["pop3"].config_bytes == b"<a>\r\n</a>\r\n"


def test_config_file_bytes_are_used_exactly(tmp_path: Path) -> None:
    raw = b"\xff\xfe<\x00\r\n\x00garbage \x80\x81 bytes"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "pop3.config").write_bytes(raw)
    server = one(tmp_path, '[server.pop3]\nconfig_file = "configs/pop3.config"\nmodified = 2026-11-20T10:00:00Z\n')
    assert server.protocols["pop3"].config_bytes == raw
    assert server.protocols["pop3"].modified == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def test_times_are_utc_and_local_times_are_taken_as_utc(tmp_path: Path) -> None:
    server = one(tmp_path, '[server.pop3]\nconfig = "<c/>"\nmodified = 2026-11-20T12:00:00+02:00\n'
                           'service = "Running"\nstarted = 2026-11-19T08:00:00\n')
    assert server.protocols["pop3"].modified == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert server.protocols["pop3"].started == datetime(2026, 11, 19, 8, 0, tzinfo=UTC)


def test_servers_get_consecutive_addresses(tmp_path: Path) -> None:
    body = "".join(f'[[server]]\nname = "CAS{n:02}"\n' for n in range(1, 4))
    fleet = load_fleet(write(tmp_path, body, LAB + 'base_address = "127.0.5.254"\n'))
    assert [s.address for s in fleet.servers] == ["127.0.5.254", "127.0.5.255", "127.0.6.0"]
    moved = relocate_fleet(fleet, "127.0.88.1", 0)
    assert [s.address for s in moved.servers] == ["127.0.88.1", "127.0.88.2", "127.0.88.3"]
    assert moved.lab.port == 0


# -- validation errors name file, server and field --------------------------------------------


@pytest.mark.parametrize(("server", "field"), [
    ('colour = "blue"\n', "colour"),
    ('fault = "explode"\n', "fault"),
    ('build = "8.3"\n', "build"),
    ('build = "14.3.123.4"\n', "build"),
    ('registry_key = "v14\\\\Setup"\n', "registry_key"),
    ('install_path = "Exchange"\n', "install_path"),
    ('roles = ["Mailbox"]\n', "roles"),
    ('language = "fr"\n', "language"),
    ('application_log = "hidden"\n', "application_log"),
    ('rollups = [ { name = "RU1", installed = "2017-03-21" } ]\n', "installed"),
    ('[server.pop3]\nconfig = "<c/>"\nencoding = "latin-1"\n', "pop3.encoding"),
    ('[server.pop3]\nservice = "Sleeping"\n', "pop3.service"),
    ('[server.imap4]\nstart_mode = "Automatic"\n', "imap4.start_mode"),
    ('[server.pop3]\nvalue = "true"\n', "value"),
    ('[server.pop3]\nmodified = 2026-11-20T10:00:00Z\n', "pop3.modified"),
    ('[server.pop3]\nconfig = "<c/>"\nmodified = 2026-11-20\n', "pop3.modified"),
    ('[server.pop3]\nconfig = "<c/>"\nconfig_file = "x"\n', "pop3.config"),
    ('[server.pop3]\nconfig_file = "../outside.config"\n', "pop3.config_file"),
    ('[server.pop3]\nconfig_file = "/etc/passwd"\n', "pop3.config_file"),
    ('[server.pop3]\nconfig_file = "nothing-here.config"\n', "pop3.config_file"),
    ('[server.pop3]\nrefused_logons = [ { user = "u", mailbox_site = "Hamburg" } ]\n', "pop3.refused_logons[1].at"),
    ('[server.pop3]\nrefused_logons = [ { user = "u", at = 2026-11-21T09:00:00Z } ]\n',
     "pop3.refused_logons[1].mailbox_site"),
    ('site_value = "GetComputerSite"\n', "site_value"),
])
def test_server_errors_name_file_server_and_field(tmp_path: Path, server: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        one(tmp_path, server)
    text = str(caught.value)
    assert "fleet.toml" in text and "CAS01" in text and field in text


@pytest.mark.parametrize(("lab", "field"), [
    ('port = 70000\n', "port"),
    ('port = -1\n', "port"),
    ('auth = "negotiate"\n', "auth"),
    ('auth = "kerberos"\n', "keytab"),
    ('keytab = "http.keytab"\n', "keytab"),
    ('base_address = "10.0.0.1"\n', "base_address"),
    ('base_address = "not-an-address"\n', "base_address"),
    ('base_address = "127.255.255.254"\n', "base_address"),
    ('latency_ms = "fast"\n', "latency_ms"),
    ('mode = "x"\n', "mode"),
])
def test_lab_errors_name_the_field(tmp_path: Path, lab: str, field: str) -> None:
    body = '[[server]]\nname = "CAS01"\n[[server]]\nname = "CAS02"\n'
    with pytest.raises(ConfigError) as caught:
        load_fleet(write(tmp_path, body, LAB + lab))
    assert "fleet.toml" in str(caught.value) and "[lab]" in str(caught.value) and field in str(caught.value)


def test_netlogon_site_value(tmp_path: Path) -> None:
    assert one(tmp_path, 'site = "Hamburg"\n').site_value == "SiteName"
    assert one(tmp_path, 'site = "Hamburg"\nsite_value = "DynamicSiteName"\n').site_value == "DynamicSiteName"
    assert one(tmp_path, 'site_value = "none"\n').site_value == "none"


def test_duplicate_server_names_are_refused_whatever_the_case(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server 'cas01'.*name.*twice"):
        load_fleet(write(tmp_path, '[[server]]\nname = "CAS01"\n[[server]]\nname = "cas01"\n'))


def test_toml_syntax_errors_give_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fleet\.toml.*line 6, column"):
        load_fleet(write(tmp_path, '[[server]]\nname = "CAS01"\nsite = \n'))


def test_a_fleet_needs_lab_and_servers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[lab\] is required"):
        load_fleet(write(tmp_path, '[[server]]\nname = "CAS01"\n', lab=""))
    with pytest.raises(ConfigError, match="no \\[\\[server\\]\\]"):
        load_fleet(write(tmp_path, ""))


# -- service pack upgrade ------------------------------------------------------------------


def test_upgrade_server_resets_both_configs_and_restarts_services() -> None:
    fleet = load_fleet(demo_fleet_path())
    at = datetime(2026, 11, 28, 9, 30, 15, 123456, tzinfo=UTC)
    upgraded = upgrade_server(fleet, "CAS05", "8.3.83.6", at)
    before, after = fleet.server("CAS05"), upgraded.server("CAS05")
    assert before.build == "8.1.240.6" and after.build == "8.3.83.6"
    for protocol, proto in after.protocols.items():
        assert read_config(before.protocols[protocol].config_bytes).value is True
        assert proto.config_bytes == DEFAULT_CONFIG_BYTES
        assert read_config(proto.config_bytes).value is False
        assert proto.modified is not None and proto.started is not None
        assert proto.modified <= proto.started == at.replace(microsecond=0)  # no pending restart
    assert [s for s in upgraded.servers if s.name != "CAS05"] == [s for s in fleet.servers if s.name != "CAS05"]
    assert after.address == before.address


def test_upgrade_server_refuses_unknown_server_and_bad_build() -> None:
    fleet = load_fleet(demo_fleet_path())
    with pytest.raises(ConfigError, match="CAS99"):
        upgrade_server(fleet, "CAS99", "8.3.83.6", datetime.now(UTC))
    with pytest.raises(ConfigError, match="build"):
        upgrade_server(fleet, "CAS05", "SP3", datetime.now(UTC))
