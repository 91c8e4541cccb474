"""Shared fixtures: real history databases (a SQLite file, a fresh PostgreSQL database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

PG_TEST_URL = os.environ.get("CAS_AUDIT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite history file in the test's temporary folder (not created yet)."""
    return f"sqlite:///{tmp_path / 'history.db'}"


@pytest.fixture(scope="session")
def _pg_admin() -> Iterator[Engine]:
    """An autocommit connection to the PostgreSQL server named by CAS_AUDIT_TEST_PG."""
    url = make_url(PG_TEST_URL)
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        engine.connect().close()
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        message = (
            f"PostgreSQL not reachable at {url.render_as_string(hide_password=True)}: "
            f"set CAS_AUDIT_TEST_PG to run these tests ({reason})"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(_pg_admin: Engine) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"cas_audit_test_{uuid.uuid4().hex[:16]}"
    with _pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def _pg_at_head(_pg_admin: Engine) -> Iterator[Engine]:
    """A PostgreSQL database upgraded to the current schema once per session (`history_url`)."""
    from scanner.store.db import upgrade_database

    name = f"cas_audit_head_{uuid.uuid4().hex[:16]}"
    with _pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _pg_admin.url.set(database=name)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        upgrade_database(url.render_as_string(hide_password=False))
        yield engine
    finally:
        engine.dispose()
        with _pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def history_url(request: pytest.FixtureRequest) -> str:
    """A history database at the current schema holding no rows: once a new SQLite file, once
    the session's PostgreSQL database emptied as new (every table but the schema version
    truncated, identities restarted). Creating and upgrading empty databases is tested
    through `store_url`."""
    if request.param == "sqlite":
        from scanner.store.db import upgrade_database

        url: str = request.getfixturevalue("sqlite_url")
        upgrade_database(url)
        return url
    from scanner.store.db import VERSION_TABLE

    engine: Engine = request.getfixturevalue("_pg_at_head")
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' AND tablename <> :kept"),
            {"kept": VERSION_TABLE},
        ).scalars().all()
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty history database URL: once a SQLite file, once a PostgreSQL database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that take `pg_url` directly are marked `postgres` like the parametrized ones."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
