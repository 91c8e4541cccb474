"""Store what stays the same once: server, protocol and finding documents.

Server scans, observations and findings keep only what differs on every scan (run,
server, times, status) and refer to a document for the rest (see
scanner/store/documents.py). Existing rows are converted: each distinct server state,
protocol state and finding becomes one document; nothing a report shows changes.
Adds the indexes the per-server lifecycle and the organisation view read through.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from scanner.parse.observe import ProtocolObservation, ServerObservation
from scanner.store.documents import digest, dumps, finding_document, protocol_state, server_state
from scanner.store.models import UTCDateTime

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHUNK = 2000
_SERVER_COLUMNS = ('address', 'reported_site', 'computer', 'build', 'service_pack', 'rollup',
                   'build_recognised', 'rollup_listed', 'install_path', 'setup_key', 'ps_version', 'collector_errors')
_PROTOCOL_COLUMNS = ('allow_cross_site', 'value_source', 'config_status', 'raw_value', 'config_path',
                     'config_sha256', 'config_length', 'config_modified', 'config_encoding', 'key_notes',
                     'service', 'start_mode', 'service_started', 'pending_restart', 'detail')
_FINDING_COLUMNS = ('rule', 'severity', 'state', 'server_name', 'site', 'protocol', 'message', 'evidence',
                    'first_seen_run_id', 'first_seen_at', 'waiver')

_meta = sa.MetaData()
_documents = sa.Table('documents', _meta, sa.Column('id', sa.Integer, primary_key=True),
                      sa.Column('sha256', sa.String(64)), sa.Column('kind', sa.String(16)), sa.Column('body', sa.Text))
_scans = sa.Table(
    'server_scans', _meta, sa.Column('id', sa.Integer, primary_key=True), sa.Column('state_id', sa.Integer),
    sa.Column('address', sa.String), sa.Column('site', sa.String), sa.Column('reported_site', sa.String),
    sa.Column('computer', sa.String), sa.Column('build', sa.String), sa.Column('service_pack', sa.String),
    sa.Column('rollup', sa.String), sa.Column('build_recognised', sa.Boolean), sa.Column('rollup_listed', sa.String), sa.Column('install_path', sa.String),
    sa.Column('setup_key', sa.String), sa.Column('ps_version', sa.String), sa.Column('collector_errors', sa.JSON),
)
_observations = sa.Table(
    'observations', _meta, sa.Column('id', sa.Integer, primary_key=True), sa.Column('state_id', sa.Integer),
    sa.Column('protocol', sa.String), sa.Column('allow_cross_site', sa.Boolean), sa.Column('value_source', sa.String),
    sa.Column('config_status', sa.String), sa.Column('raw_value', sa.String), sa.Column('config_path', sa.String),
    sa.Column('config_sha256', sa.String), sa.Column('config_length', sa.Integer),
    sa.Column('config_modified', UTCDateTime()), sa.Column('config_encoding', sa.String),
    sa.Column('key_notes', sa.JSON), sa.Column('service', sa.String), sa.Column('start_mode', sa.String),
    sa.Column('service_started', UTCDateTime()), sa.Column('pending_restart', sa.Boolean),
    sa.Column('detail', sa.String),
)
_findings = sa.Table(
    'findings', _meta, sa.Column('id', sa.Integer, primary_key=True), sa.Column('body_id', sa.Integer), sa.Column('extra', sa.Text),
    sa.Column('rule', sa.String), sa.Column('severity', sa.String), sa.Column('state', sa.String),
    sa.Column('server_name', sa.String), sa.Column('site', sa.String), sa.Column('protocol', sa.String),
    sa.Column('message', sa.String), sa.Column('evidence', sa.JSON), sa.Column('first_seen_run_id', sa.Integer),
    sa.Column('first_seen_at', UTCDateTime()), sa.Column('waiver', sa.JSON),
)


def _server_doc(row: Any) -> tuple[str, None]:
    obs = ServerObservation(
        name='', address=row.address, site=row.site, scan_status='ok', started_at=None,  # type: ignore[arg-type]
        finished_at=None,  # type: ignore[arg-type]
        computer=row.computer, reported_site=row.reported_site, build=row.build, service_pack=row.service_pack,
        rollup=row.rollup, build_recognised=bool(row.build_recognised), rollup_listed=row.rollup_listed,
        install_path=row.install_path,
        setup_key=row.setup_key, ps_version=row.ps_version,
        collector_errors=tuple((str(a), str(b)) for a, b in (row.collector_errors or [])),
    )
    return dumps(server_state(obs)), None


def _protocol_doc(row: Any) -> tuple[str, None]:
    p = ProtocolObservation(
        protocol=row.protocol, allow_cross_site=row.allow_cross_site, value_source=row.value_source,
        config_status=row.config_status, raw_value=row.raw_value, config_path=row.config_path,
        config_sha256=row.config_sha256, config_bytes=None, config_length=row.config_length,
        config_modified=row.config_modified, config_encoding=row.config_encoding,
        key_notes=tuple(row.key_notes or ()), service=row.service, start_mode=row.start_mode,
        service_started=row.service_started, pending_restart=bool(row.pending_restart), detail=row.detail,
    )
    return dumps(protocol_state(p, row.config_sha256)), None


def _finding_doc(row: Any) -> tuple[str, str | None]:
    evidence = row.evidence if isinstance(row.evidence, dict) else json.loads(row.evidence or '{}')
    waiver = row.waiver if row.waiver is None or isinstance(row.waiver, dict) else json.loads(row.waiver)
    return finding_document(
        rule=row.rule, severity=row.severity, state=row.state, server_name=row.server_name, site=row.site,
        protocol=row.protocol, message=row.message, evidence=evidence, first_seen_run_id=row.first_seen_run_id,
        first_seen_at=row.first_seen_at, waiver=waiver,
    )


def _pages(conn: sa.Connection, table: sa.Table, columns: Sequence[str]) -> Iterator[list[Any]]:
    last = 0
    while True:
        rows = conn.execute(
            sa.select(table.c.id, *(table.c[c] for c in columns)).where(table.c.id > last)
            .order_by(table.c.id).limit(_CHUNK)
        ).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _convert(conn: sa.Connection, table: sa.Table, columns: Sequence[str], kind: str, ref: str,
             make: Any, known: dict[str, int]) -> None:
    """Point every row of `table` at the document of its old columns, creating documents once."""
    for rows in _pages(conn, table, columns):
        updates = []
        for row in rows:
            text, extra = make(row)
            key = digest(kind, text)
            if key not in known:
                known[key] = conn.execute(
                    sa.insert(_documents).values(sha256=key, kind=kind, body=text).returning(_documents.c.id)
                ).scalar_one()
            updates.append({'row_id': row.id, 'doc': known[key], 'extra_value': extra})
        values = {ref: sa.bindparam('doc')}
        if 'extra' in table.c:
            values['extra'] = sa.bindparam('extra_value')
        conn.execute(sa.update(table).where(table.c.id == sa.bindparam('row_id')).values(values), updates)


def upgrade() -> None:
    op.create_table('documents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_documents')),
    sa.UniqueConstraint('sha256', name=op.f('uq_documents_sha256'))
    )
    op.add_column('server_scans', sa.Column('state_id', sa.Integer(), nullable=True))
    op.add_column('observations', sa.Column('state_id', sa.Integer(), nullable=True))
    op.add_column('findings', sa.Column('body_id', sa.Integer(), nullable=True))
    op.add_column('findings', sa.Column('extra', sa.Text(), nullable=True))

    conn = op.get_bind()
    known: dict[str, int] = {}
    _convert(conn, _scans, ('site', *_SERVER_COLUMNS), 'server', 'state_id', _server_doc, known)
    _convert(conn, _observations, ('protocol', *_PROTOCOL_COLUMNS), 'protocol', 'state_id', _protocol_doc, known)
    _convert(conn, _findings, _FINDING_COLUMNS, 'finding', 'body_id', _finding_doc, known)

    with op.batch_alter_table('server_scans') as batch:
        batch.drop_constraint(op.f('uq_server_scans_run_id_server_id'), type_='unique')
        for column in _SERVER_COLUMNS:
            batch.drop_column(column)
        batch.alter_column('state_id', existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(op.f('fk_server_scans_state_id_documents'), 'documents', ['state_id'], ['id'])
        batch.create_unique_constraint(op.f('uq_server_scans_server_id_run_id'), ['server_id', 'run_id'])
        batch.create_index('ix_server_scans_run_id', ['run_id'])

    op.drop_index('ix_observations_run_id', table_name='observations')
    op.drop_index('ix_observations_server_id_protocol_scanned_at', table_name='observations')
    with op.batch_alter_table('observations') as batch:
        batch.drop_constraint(op.f('fk_observations_config_sha256_config_blobs'), type_='foreignkey')
        batch.drop_constraint(op.f('fk_observations_run_id_scan_runs'), type_='foreignkey')
        batch.drop_constraint(op.f('fk_observations_server_id_servers'), type_='foreignkey')
        for column in ('run_id', 'server_id', 'scanned_at', 'refused_logons_count', *_PROTOCOL_COLUMNS):
            batch.drop_column(column)
        batch.alter_column('state_id', existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(op.f('fk_observations_state_id_documents'), 'documents', ['state_id'], ['id'])

    op.drop_index('ix_findings_rule_server_id_protocol', table_name='findings')
    with op.batch_alter_table('findings') as batch:
        batch.drop_constraint(op.f('ck_findings_state'), type_='check')
        batch.drop_constraint(op.f('fk_findings_first_seen_run_id_scan_runs'), type_='foreignkey')
        for column in _FINDING_COLUMNS:
            batch.drop_column(column)
        batch.alter_column('body_id', existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(op.f('fk_findings_body_id_documents'), 'documents', ['body_id'], ['id'])
        batch.create_index('ix_findings_server_id_run_id', ['server_id', 'run_id'])

    op.create_index('ix_run_servers_server_id_run_id', 'run_servers', ['server_id', 'run_id'])
    if conn.dialect.name == 'postgresql':
        # fresh statistics for the rewritten tables: without them the planner reads every
        # scan of a server to find its newest one (bench/README.md)
        for table in ('documents', 'server_scans', 'observations', 'findings', 'run_servers', 'scan_runs'):
            op.execute(f'ANALYZE {table}')


def downgrade() -> None:
    raise NotImplementedError(
        "revision 0003 stores scans and findings as shared documents; going back would need the "
        "old columns filled again: restore the backup taken before `cas-audit db upgrade` instead"
    )
