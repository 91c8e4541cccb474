"""Initial schema: scan runs, servers, server scans, observations, config blobs,
refused logons, findings and resolved findings.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('config_blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_config_blobs'))
    )
    op.create_table('scan_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('servers_planned', sa.Integer(), nullable=False),
    sa.Column('servers_scanned', sa.Integer(), nullable=False),
    sa.Column('servers_failed', sa.Integer(), nullable=False),
    sa.Column('tool_version', sa.String(), nullable=False),
    sa.Column('catalog_version', sa.String(), nullable=True),
    sa.Column('operator', sa.String(), nullable=False),
    sa.Column('scanning_host', sa.String(), nullable=False),
    sa.Column('inventory_sha256', sa.String(length=64), nullable=False),
    sa.Column('policy_sha256', sa.String(length=64), nullable=True),
    sa.Column('policy_text', sa.String(), nullable=True),
    sa.Column('site_filter', sa.String(), nullable=True),
    sa.Column('organisation', sa.String(), nullable=True),
    sa.CheckConstraint("status IN ('running', 'complete', 'partial', 'aborted')", name=op.f('ck_scan_runs_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scan_runs'))
    )
    op.create_table('resolved_findings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('server_name', sa.String(), nullable=True),
    sa.Column('protocol', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['scan_runs.id'], name=op.f('fk_resolved_findings_run_id_scan_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_resolved_findings'))
    )
    op.create_index(op.f('ix_resolved_findings_run_id'), 'resolved_findings', ['run_id'])
    op.create_table('servers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('name_key', sa.String(), nullable=False),
    sa.Column('first_seen_run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['first_seen_run_id'], ['scan_runs.id'], name=op.f('fk_servers_first_seen_run_id_scan_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_servers')),
    sa.UniqueConstraint('name', name=op.f('uq_servers_name')),
    sa.UniqueConstraint('name_key', name=op.f('uq_servers_name_key'))
    )
    op.create_table('findings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('server_id', sa.Integer(), nullable=True),
    sa.Column('server_name', sa.String(), nullable=True),
    sa.Column('site', sa.String(), nullable=True),
    sa.Column('protocol', sa.String(length=16), nullable=True),
    sa.Column('message', sa.String(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('first_seen_run_id', sa.Integer(), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('waiver', sa.JSON(), nullable=True),
    sa.CheckConstraint("state IN ('new', 'persisting', 'waived', 'waiver-expired')", name=op.f('ck_findings_state')),
    sa.ForeignKeyConstraint(['first_seen_run_id'], ['scan_runs.id'], name=op.f('fk_findings_first_seen_run_id_scan_runs')),
    sa.ForeignKeyConstraint(['run_id'], ['scan_runs.id'], name=op.f('fk_findings_run_id_scan_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_findings_server_id_servers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_findings'))
    )
    op.create_index('ix_findings_rule_server_id_protocol', 'findings', ['rule', 'server_id', 'protocol'])
    op.create_index(op.f('ix_findings_run_id'), 'findings', ['run_id'])
    op.create_table('run_servers',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('server_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(), nullable=False),
    sa.Column('inventory_site', sa.String(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['scan_runs.id'], name=op.f('fk_run_servers_run_id_scan_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_run_servers_server_id_servers')),
    sa.PrimaryKeyConstraint('run_id', 'server_id', name=op.f('pk_run_servers'))
    )
    op.create_table('server_scans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('server_id', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(), nullable=False),
    sa.Column('scan_status', sa.String(length=16), nullable=False),
    sa.Column('error_kind', sa.String(), nullable=True),
    sa.Column('error_message', sa.String(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('site', sa.String(), nullable=True),
    sa.Column('reported_site', sa.String(), nullable=True),
    sa.Column('computer', sa.String(), nullable=True),
    sa.Column('build', sa.String(), nullable=True),
    sa.Column('service_pack', sa.String(), nullable=True),
    sa.Column('rollup', sa.String(), nullable=True),
    sa.Column('build_recognised', sa.Boolean(), nullable=False),
    sa.Column('install_path', sa.String(), nullable=True),
    sa.Column('setup_key', sa.String(), nullable=True),
    sa.Column('ps_version', sa.String(), nullable=True),
    sa.Column('events_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('collector_errors', sa.JSON(), nullable=False),
    sa.CheckConstraint("scan_status IN ('ok', 'error')", name=op.f('ck_server_scans_scan_status')),
    sa.ForeignKeyConstraint(['run_id'], ['scan_runs.id'], name=op.f('fk_server_scans_run_id_scan_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_server_scans_server_id_servers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_server_scans')),
    sa.UniqueConstraint('run_id', 'server_id', name=op.f('uq_server_scans_run_id_server_id'))
    )
    op.create_index('ix_server_scans_server_id_finished_at', 'server_scans', ['server_id', 'finished_at'])
    op.create_table('observations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('server_scan_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('server_id', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=16), nullable=False),
    sa.Column('scanned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('allow_cross_site', sa.Boolean(), nullable=True),
    sa.Column('value_source', sa.String(), nullable=False),
    sa.Column('config_status', sa.String(), nullable=False),
    sa.Column('raw_value', sa.String(), nullable=True),
    sa.Column('config_path', sa.String(), nullable=False),
    sa.Column('config_sha256', sa.String(length=64), nullable=True),
    sa.Column('config_length', sa.Integer(), nullable=True),
    sa.Column('config_modified', sa.DateTime(timezone=True), nullable=True),
    sa.Column('config_encoding', sa.String(), nullable=True),
    sa.Column('key_notes', sa.JSON(), nullable=False),
    sa.Column('service', sa.String(), nullable=False),
    sa.Column('start_mode', sa.String(), nullable=True),
    sa.Column('service_started', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pending_restart', sa.Boolean(), nullable=False),
    sa.Column('refused_logons_count', sa.Integer(), nullable=False),
    sa.Column('detail', sa.String(), nullable=False),
    sa.ForeignKeyConstraint(['config_sha256'], ['config_blobs.sha256'], name=op.f('fk_observations_config_sha256_config_blobs')),
    sa.ForeignKeyConstraint(['run_id'], ['scan_runs.id'], name=op.f('fk_observations_run_id_scan_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_observations_server_id_servers')),
    sa.ForeignKeyConstraint(['server_scan_id'], ['server_scans.id'], name=op.f('fk_observations_server_scan_id_server_scans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_observations')),
    sa.UniqueConstraint('server_scan_id', 'protocol', name=op.f('uq_observations_server_scan_id_protocol'))
    )
    op.create_index('ix_observations_run_id', 'observations', ['run_id'])
    op.create_index('ix_observations_server_id_protocol_scanned_at', 'observations', ['server_id', 'protocol', 'scanned_at'])
    op.create_table('refused_logons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('observation_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('user_name', sa.String(), nullable=False),
    sa.Column('mailbox_site', sa.String(), nullable=False),
    sa.ForeignKeyConstraint(['observation_id'], ['observations.id'], name=op.f('fk_refused_logons_observation_id_observations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refused_logons'))
    )
    op.create_index(op.f('ix_refused_logons_observation_id'), 'refused_logons', ['observation_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_refused_logons_observation_id'), table_name='refused_logons')
    op.drop_table('refused_logons')
    op.drop_index('ix_observations_server_id_protocol_scanned_at', table_name='observations')
    op.drop_index('ix_observations_run_id', table_name='observations')
    op.drop_table('observations')
    op.drop_index('ix_server_scans_server_id_finished_at', table_name='server_scans')
    op.drop_table('server_scans')
    op.drop_table('run_servers')
    op.drop_index(op.f('ix_findings_run_id'), table_name='findings')
    op.drop_index('ix_findings_rule_server_id_protocol', table_name='findings')
    op.drop_table('findings')
    op.drop_table('servers')
    op.drop_index(op.f('ix_resolved_findings_run_id'), table_name='resolved_findings')
    op.drop_table('resolved_findings')
    op.drop_table('scan_runs')
    op.drop_table('config_blobs')
