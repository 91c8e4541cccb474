"""Reading commands (report, history, diff, evidence) never create or upgrade a database:
a mistyped --db is "no cas-audit history at URL" (exit 2) and leaves no file or folder
behind; someone else's SQLite file is refused and left byte for byte as it was."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from labfleet import cas_audit_here

pytestmark = pytest.mark.slow  # the cas-audit command against foreign database files

READERS = [
    ("history",),
    ("report", "--format", "json"),
    ("diff", "1", "2"),
    ("evidence", "--server", "CAS01", "--protocol", "pop3", "--out", "x.config"),
]


@pytest.fixture
def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str]]:
    """The command in this process (CliRunner), from `tmp_path`, with the default history
    folder moved there too; what it does to the files is the point, not the process."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))

    def run(url: str, *args: str) -> tuple[int, str]:
        result = cas_audit_here(*args, "--db", url, password=None)
        return result.returncode, result.stderr
    return run


def _run_process(tmp_path: Path, url: str, *args: str) -> tuple[int, str]:
    """The same in a child process, as a scheduled job runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")
    result = subprocess.run([sys.executable, "-m", "scanner", *args, "--db", url], cwd=tmp_path, env=env,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    return result.returncode, result.stderr


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_a_missing_history_is_not_created(tmp_path: Path, args: tuple[str, ...],
                                          _run: Callable[..., tuple[int, str]]) -> None:
    url = f"sqlite:///{tmp_path / 'typo' / 'path.db'}"
    code, stderr = _run(url, *args)
    assert code == 2, stderr
    assert f"no cas-audit history at {url}" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("args", [*READERS, ("scan", "--inventory", "inv.toml"), ("db", "upgrade")],
                         ids=lambda a: a[0])
def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path: Path, args: tuple[str, ...],
                                                         _run: Callable[..., tuple[int, str]]) -> None:
    foreign = tmp_path / "accounting.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        db.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    db.close()
    (tmp_path / "inv.toml").write_text('[defaults]\nusername = "u"\n[[server]]\nname = "CAS01"\n', encoding="utf-8")
    before = hashlib.sha256(foreign.read_bytes()).hexdigest()
    code, stderr = _run(f"sqlite:///{foreign}", *args)
    assert code == 2, stderr
    assert "is not a cas-audit history" in stderr and "invoices" in stderr
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("accounting")) == ["accounting.db"]


def test_an_older_schema_is_not_upgraded_by_a_reader(tmp_path: Path) -> None:
    from alembic import command

    from scanner.store.db import alembic_config, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    engine.dispose()
    code, stderr = _run_process(tmp_path, url, "history")  # and the real process's exit status
    assert code == 2, stderr
    assert "cas-audit db upgrade" in stderr
