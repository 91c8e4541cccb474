"""The wheel carries what the product needs outside Python files (rule catalog, Alembic
migrations, collector scripts and schemas, the demo fleet) and only `scanner` imports."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and installs it into a fresh virtual environment

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(folder), str(REPO)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = folder.glob("cas_audit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"scanner", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for needed in ("scanner/_data/rules/catalog.toml", "scanner/_data/rules/baseline.toml",
                   "scanner/_data/migrations/env.py", "scanner/_data/migrations/versions/0001_initial.py",
                   "scanner/_data/migrations/versions/0002_rollup_listed.py",
                   "scanner/collect/collect.ps1", "scanner/collect/schema.xsd",
                   "scanner/collect/discover.ps1", "scanner/collect/discover.xsd",
                   "scanner/parse/exchange2007-builds.csv",
                   "scanner/lab/fleets/demo.toml", "scanner/lab/fleets/demo-policy.toml", "scanner/py.typed"):
        assert needed in names, needed
    assert not any("__pycache__" in n for n in names)
    target = folder / "site"
    zipfile.ZipFile(wheel).extractall(target)
    # byte-compiled once, as pip does when it installs a wheel: under PYTHONDONTWRITEBYTECODE
    # (CI's setting) each child below otherwise compiled every module it imported again
    assert compileall.compile_dir(target / "scanner", quiet=1)
    return target


def run(unpacked: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    env["PYTHONPATH"] = str(unpacked)  # before the editable checkout on sys.path
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_installed_wheel_runs_from_its_own_files(unpacked: Path, tmp_path: Path) -> None:
    where = run(unpacked, tmp_path, "-c", "import scanner, scanner.util.paths as p; print(scanner.__file__); "
                                          "print(p.data_dir('rules')); print(p.data_dir('migrations'))")
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(unpacked)) for line in where.stdout.split()), where.stdout
    rules = run(unpacked, tmp_path, "-m", "scanner", "rules")
    assert rules.returncode == 0 and "XS-012" in rules.stdout, rules.stderr
    upgrade = run(unpacked, tmp_path, "-m", "scanner", "db", "upgrade", "--db", f"sqlite:///{tmp_path / 'h.db'}")
    assert upgrade.returncode == 0, upgrade.stderr
    demo = run(unpacked, tmp_path, "-m", "scanner", "demo", "--out", str(tmp_path / "out"))
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "out" / "cas-audit-run-2-de.xlsx").stat().st_size > 0
