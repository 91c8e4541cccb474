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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty history database URL: once a SQLite file, once a PostgreSQL database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that take `pg_url` directly are marked `postgres` like the parametrized ones."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
