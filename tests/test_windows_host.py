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
from scanner.util.paths import log_folder, user_data_folder

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


def test_windows_error_logs_are_beside_the_history(windows: None) -> None:
    assert PureWindowsPath(str(log_folder())) == PureWindowsPath(LOCAL_APPDATA, "cas-audit", "Logs")


def test_linux_error_logs_follow_xdg_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert log_folder() == tmp_path / "state" / "cas-audit" / "log"


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


# Calls that do not exist on Windows, or do something else there. os.kill(pid, 0), the
# POSIX "is it alive?" probe, terminates the process on Windows (TerminateProcess with exit
# code 0: Python's os.kill documentation); os.chmod only sets the read-only flag.
POSIX_ONLY = {
    "os.getuid", "os.geteuid", "os.getgid", "os.getegid", "os.fork", "os.setsid", "os.killpg", "os.getpgid",
    "os.setpgrp", "os.chown", "os.mkfifo", "os.statvfs", "os.getloadavg", "os.kill", "os.chmod", "os.uname",
    "os.sync", "os.nice", "signal.SIGKILL", "signal.SIGALRM", "signal.SIGHUP", "signal.SIGUSR1", "signal.SIGUSR2",
    "signal.SIGCHLD", "signal.SIGPIPE", "signal.SIGQUIT", "signal.alarm", "signal.setitimer", "signal.pause",
    "signal.pthread_kill", "signal.siginterrupt",
}
POSIX_MODULES = {"fcntl", "pwd", "grp", "termios", "resource", "pty", "tty", "posix", "syslog", "crypt"}
GUARD = "# posix-only: guarded"  # on the line of a use that checks sys.platform or hasattr first


def posix_only_uses(source: str) -> list[tuple[int, str]]:
    import ast

    found = []
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        name = None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            dotted = f"{node.value.id}.{node.attr}"
            name = dotted if dotted in POSIX_ONLY else None
        elif isinstance(node, ast.Import):
            name = next((a.name for a in node.names if a.name.split(".")[0] in POSIX_MODULES), None)
        elif isinstance(node, ast.ImportFrom) and node.module:
            name = node.module if node.module.split(".")[0] in POSIX_MODULES else None
            if node.module in ("os", "signal"):
                name = next((f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in POSIX_ONLY),
                            None)
        if name and GUARD not in lines[node.lineno - 1]:
            found.append((node.lineno, name))
    return found


def test_no_unguarded_posix_only_call_in_the_product() -> None:
    package = Path(__file__).resolve().parent.parent / "scanner"
    offences = [f"{path.relative_to(package.parent)}:{line}: {name}"
                for path in sorted(package.rglob("*.py"))
                for line, name in posix_only_uses(path.read_text(encoding="utf-8"))]
    assert not offences, "POSIX-only calls (guard them and mark the line with " + GUARD + "):\n" + "\n".join(offences)


def test_the_posix_check_sees_what_it_looks_for() -> None:
    source = "import os, fcntl\nfrom signal import SIGKILL\nos.kill(pid, 0)\nos.getuid()  " + GUARD + "\n"
    assert sorted(name for _, name in posix_only_uses(source)) == ["fcntl", "os.kill", "signal.SIGKILL"]
