"""The command line starts light: importing it loads none of the libraries a command needs
only when it runs (the history's SQLAlchemy and alembic, lxml, openpyxl, pywinrm, requests).
Each `cas-audit` process pays that import, so `--help`, a usage error and every child
process of the test suite start in about a fifth of the CPU (0.15 s instead of 1.1 s
measured when importing the command line pulled in the store through the report writer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = ("sqlalchemy", "alembic", "lxml", "openpyxl", "winrm", "requests", "ldap3", "cryptography")


def test_importing_the_command_line_loads_no_heavy_library() -> None:
    code = ("import sys\nimport scanner.cli\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"importing scanner.cli loads {done.stdout.strip()}"


def test_opening_a_history_at_head_needs_no_alembic(tmp_path: Path) -> None:
    """A command that opens a history already at head (to read it, or to write to it) compares
    its version with HEAD_REVISION: Alembic and the ten migration scripts are not loaded."""
    from scanner.store.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'history.db'}"
    upgrade_database(url)
    code = ("import sys\nfrom scanner.store.db import open_engine\n"
            f"open_engine({url!r}, read_only=True).dispose()\nopen_engine({url!r}).dispose()\n"
            f"open_engine({url!r}, create=False).dispose()\n"
            "print(' '.join(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
