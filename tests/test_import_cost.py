"""The command line starts light: importing it loads none of the libraries a command needs
only when it runs (the history's SQLAlchemy and alembic, lxml, openpyxl, pywinrm, requests).
Each `cas-audit` process pays that import, so `--help`, a usage error and every child
process of the test suite start in about a fifth of the CPU (0.15 s instead of 1.1 s
measured when importing the command line pulled in the store through the report writer)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "alembic", "lxml", "openpyxl", "winrm", "requests", "ldap3", "cryptography")


def test_importing_the_command_line_loads_no_heavy_library() -> None:
    code = ("import sys\nimport scanner.cli\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"importing scanner.cli loads {done.stdout.strip()}"
