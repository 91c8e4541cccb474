"""Alembic environment for the cas-audit history database.

cas-audit runs its upgrades from code (scanner.store.db.upgrade, with the options of
`migration_options`) without this file; alembic.command (tests, writing a revision) runs it,
on the connection handed over in config.attributes["connection"]. To write a new revision,
compare the models with a database at head:

    from alembic import command
    from scanner.store.db import alembic_config, open_engine
    with open_engine("sqlite:////tmp/head.db").begin() as conn:
        command.revision(alembic_config(conn), message="...", autogenerate=True, rev_id="0002")

then edit the generated file so it uses only `sa` types (no imports from `scanner`).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from scanner.store.db import VERSION_TABLE, default_url, make_engine, migration_options
from scanner.store.models import Base

config = context.config
target_metadata = Base.metadata
version_table = config.attributes.get("version_table", VERSION_TABLE)


def _configure(connection: Connection) -> None:
    context.configure(connection=connection, **{**migration_options(connection.dialect.name), "version_table": version_table})


def _url() -> str:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url") or default_url()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        version_table=version_table,
        literal_binds=True,
        render_as_batch=_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
