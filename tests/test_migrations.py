"""Schema migrations: empty database to head, idempotence, models agree with revisions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

import scanner
from scanner.errors import StoreError
from scanner.store import upgrade_database
from scanner.store.db import HEAD_REVISION, VERSION_TABLE, head_revision, make_engine, migrations_dir, script_directory
from scanner.store.models import Base
from scanner.util.paths import data_dir

REPO = Path(__file__).resolve().parent.parent


def schema_state(url: str) -> tuple[str | None, list[object], set[str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            def on_this_dialect(obj: object, *_args: object) -> bool:  # an index with ddl_if(dialect=...)
                condition = getattr(obj, "_ddl_if", None)
                return condition is None or condition.dialect in (None, conn.dialect.name)

            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True,
                                                             "include_object": on_this_dialect})
            return context.get_current_revision(), compare_metadata(context, Base.metadata), set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_empty_database_upgrades_to_head_matching_the_models(store_url: str) -> None:
    assert upgrade_database(store_url) == store_url  # no password here: shown as given
    revision, diff, tables = schema_state(store_url)
    assert revision == head_revision()
    assert diff == []
    assert set(Base.metadata.tables) <= tables

    upgrade_database(store_url)  # second upgrade: nothing to do, nothing breaks
    assert schema_state(store_url)[:2] == (head_revision(), [])


def test_the_head_known_without_alembic_is_alembics_head() -> None:
    """HEAD_REVISION (compared with a history's version without loading Alembic) is the head
    of the revisions in migrations/versions: a new revision must update it."""
    from alembic.script import ScriptDirectory

    assert HEAD_REVISION == ScriptDirectory(str(migrations_dir())).get_current_head() == head_revision()
    assert script_directory().get_current_head() == HEAD_REVISION
    assert sorted(p.name.split("_")[0] for p in (migrations_dir() / "versions").glob("*.py"))[-1] == HEAD_REVISION


def test_concurrent_first_upgrades(store_url: str) -> None:
    """Two processes starting at once on an empty database both end up at head."""
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            upgrade_database(store_url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert schema_state(store_url)[:2] == (head_revision(), [])


def test_masked_url_is_returned(pg_url: str) -> None:
    assert upgrade_database(pg_url.replace("postgres@", "postgres:pw@", 1)).startswith("postgresql+psycopg://postgres:***@")


def test_script_location_in_a_checkout() -> None:
    assert migrations_dir() == REPO / "migrations"
    assert (migrations_dir() / "env.py").is_file()
    assert not (REPO / "migrations" / "__init__.py").exists()  # not an import package


@pytest.mark.slow  # a Python subprocess on a copied package
def test_script_location_in_an_installed_wheel_layout(tmp_path: Path) -> None:
    """Installed as a wheel, the migrations come from scanner/_data/migrations and work."""
    site = tmp_path / "site-packages"
    shutil.copytree(Path(scanner.__file__).parent, site / "scanner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "migrations", site / "scanner" / "_data" / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    db = tmp_path / "history.db"
    script = (
        "import sys\n"
        "from scanner.util.paths import data_dir\n"
        "from scanner.store import upgrade_database\n"
        "print(data_dir('migrations'))\n"
        f"upgrade_database({f'sqlite:///{db}'!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == site / "scanner" / "_data" / "migrations"
    assert schema_state(f"sqlite:///{db}")[:2] == (head_revision(), [])
    assert data_dir("migrations") == REPO / "migrations"  # this checkout is unaffected


def test_database_from_a_newer_version_is_refused(sqlite_url: str) -> None:
    upgrade_database(sqlite_url)
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfeed'")
    engine.dispose()
    with pytest.raises(StoreError, match="written by a newer version"):
        upgrade_database(sqlite_url)
