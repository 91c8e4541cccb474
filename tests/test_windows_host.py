"""Windows as the scanner's host, simulated on Linux: `sys.platform` says win32 and the shell
API that platformdirs asks for known folders answers as Windows would. Our code then picks
the folders and prints as it does on Windows."""

from __future__ import annotations

import io
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import platformdirs.windows
import pytest

from scanner.cli.output import Output, stream_safe
from scanner.store.db import default_url
from scanner.util.paths import user_data_folder

LOCAL_APPDATA = r"C:\Users\auditor\AppData\Local"
KNOWN_FOLDERS = {  # what SHGetKnownFolderPath returns for the user "auditor" on Windows Server
    "CSIDL_LOCAL_APPDATA": LOCAL_APPDATA,
    "CSIDL_APPDATA": r"C:\Users\auditor\AppData\Roaming",
}


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", KNOWN_FOLDERS.__getitem__)
    monkeypatch.delenv("CAS_AUDIT_DB", raising=False)


def test_windows_history_database_is_in_local_appdata(windows: None) -> None:
    # not roaming (a database does not belong in a roaming profile), no doubled app folder
    assert PureWindowsPath(str(user_data_folder())) == PureWindowsPath(LOCAL_APPDATA, "cas-audit")
    url = default_url()
    assert url.startswith("sqlite:///")
    assert PureWindowsPath(url.removeprefix("sqlite:///")) == PureWindowsPath(LOCAL_APPDATA, "cas-audit", "history.db")


def test_cas_audit_db_wins_on_windows(windows: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAS_AUDIT_DB", "sqlite:///D:/audit/history.db")
    assert default_url() == "sqlite:///D:/audit/history.db"


def test_linux_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("CAS_AUDIT_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert user_data_folder() == tmp_path / "data" / "cas-audit"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert user_data_folder() == Path.home() / ".local" / "share" / "cas-audit"


def test_macos_uses_application_support(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert PurePosixPath(user_data_folder()) == PurePosixPath(Path.home(), "Library", "Application Support", "cas-audit")


def cp1252_stream() -> io.TextIOWrapper:
    """stderr of a scheduled task on Windows redirected to a file: the ANSI code page."""
    return io.TextIOWrapper(io.BytesIO(), encoding="cp1252", errors="strict", newline="\r\n")


def test_a_name_outside_the_code_page_does_not_kill_the_run(windows: None, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = cp1252_stream()
    with pytest.raises(UnicodeEncodeError):  # what happens without the guard
        stream.write("Юрий")
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Output()
    out.configure()
    out.info("event 1008: Jörg and Юрий refused on CAS01")
    out.error("CAS02: timeout", hint="see docs/quickstart.md")
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    text = buffer.getvalue().decode("cp1252")
    assert "event 1008: Jörg and ???? refused on CAS01\r\n" in text  # ö is in cp1252, Cyrillic is not
    assert "error: CAS02: timeout\r\nhint: see docs/quickstart.md\r\n" in text
    assert "\x1b[" not in text  # a file gets no colour codes


def test_stream_safe_leaves_utf8_streams_alone() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    stream_safe(stream)
    assert stream.errors == "strict"
    legacy = cp1252_stream()
    stream_safe(legacy)
    assert legacy.errors == "replace"
