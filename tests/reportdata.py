"""Realistic `RunReport` objects for exporter tests and benchmarks.

`sample_report()` is a lab organisation scanned for the seventh time: a service pack
upgrade reset CAS02's POP3 value, CAS03 lost its IMAP4 config file, CAS04 timed out, and a
waiver covers CAS03; a recorded change (ticket CHG-1234) put CAS01's IMAP4 value back,
resolving its XS-002. With `hostile=TEXT`, every string that would come from a server, the
inventory or the policy is TEXT instead, so a test can look for it in every column.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from scanner.parse.observe import (
    ProtocolObservation,
    RefusedLogonObservation,
    ServerObservation,
)
from scanner.report.model import (
    ChangeInfo,
    ChangeRecord,
    FindingInfo,
    ResolvedInfo,
    RuleInfo,
    RunReport,
    RunRow,
    ScopeEntry,
    TrendPoint,
    WaiverInfo,
)

UTC = UTC
RUN_ID = 7
STARTED = datetime(2026, 11, 21, 9, 30, 0, 250000, tzinfo=UTC)
FINISHED = datetime(2026, 11, 21, 9, 31, 12, tzinfo=UTC)

# the values the formula-injection tests feed into every outside column
HOSTILE_VALUES: tuple[str, ...] = (
    '=HYPERLINK("http://x","y")',
    "+1+1",
    "-1+1",
    "@SUM(A1)",
    "\t=1",
    "\r=1",
    "=1+1",
    "#N/A",
)

CATALOG: tuple[tuple[str, str, str], ...] = (
    ("XS-001", "Cross-site sessions enabled where the baseline forbids them", "high"),
    ("XS-002", "Cross-site sessions disabled where the baseline requires them", "medium"),
    ("XS-003", "Effective value changed together with the Exchange build", "high"),
    ("XS-004", "Effective value changed without a build change", "medium"),
    ("XS-005", "Config file written after the running service started", "medium"),
    ("XS-006", "Config file missing, unreadable, malformed or not a boolean", "high"),
    ("XS-007", "Key set twice, removed, cleared or redirected", "low"),
    ("XS-008", "POP3 and IMAP4 disagree on one server", "low"),
    ("XS-009", "CAS servers in one site disagree", "medium"),
    ("XS-010", "Refused cross-site logons since the previous scan", "low"),
    ("XS-011", "A server in the inventory could not be scanned", "high"),
    ("XS-012", "Below Exchange 2007 SP3 or unrecognised build", "info"),
)

CONFIG_TEMPLATE = (
    '<?xml version="1.0" encoding="utf-8"?>\r\n<configuration>\r\n  <appSettings>\r\n'
    '    <add key="AllowCrossSiteSessions" value="{value}" />\r\n  </appSettings>\r\n'
    "</configuration>\r\n"
)
INSTALL = "C:\\Program Files\\Microsoft\\Exchange Server"
CONFIG_PATHS = {
    "pop3": INSTALL + "\\ClientAccess\\PopImap\\Microsoft.Exchange.Pop3.exe.Config",
    "imap4": INSTALL + "\\ClientAccess\\PopImap\\Microsoft.Exchange.Imap4.exe.Config",
}


def _t(hostile: str | None, value: str) -> str:
    return value if hostile is None else hostile


def _protocol(
    protocol: str,
    value: bool | None,
    *,
    hostile: str | None,
    status: str = "ok",
    modified: datetime = datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
    refused: tuple[RefusedLogonObservation, ...] = (),
    pending_restart: bool = False,
) -> ProtocolObservation:
    content = None
    if status == "ok":
        content = CONFIG_TEMPLATE.format(value="true" if value else "false").encode()
    return ProtocolObservation(
        protocol=protocol,
        allow_cross_site=value,
        value_source="file" if status == "ok" else "default",
        config_status=status,
        raw_value=_t(hostile, "true" if value else "false") if status == "ok" else hostile,
        config_path=_t(hostile, CONFIG_PATHS[protocol]),
        config_sha256=(
            _t(hostile, hashlib.sha256(content).hexdigest()) if content is not None else hostile
        ),
        config_bytes=content,
        config_length=len(content) if content is not None else None,
        config_modified=modified if status == "ok" else None,
        config_encoding=_t(hostile, "utf-8") if status == "ok" else hostile,
        key_notes=(hostile,) if hostile is not None else (),
        service=_t(hostile, "Running"),
        start_mode=_t(hostile, "Auto"),
        service_started=datetime(2026, 11, 19, 8, 0, tzinfo=UTC),
        pending_restart=pending_restart,
        refused_logons=refused,
        detail="" if status == "ok" else "The file does not exist.",
    )


def _servers(hostile: str | None) -> tuple[ServerObservation, ...]:
    t0 = STARTED
    refused = (
        RefusedLogonObservation(
            at=datetime(2026, 11, 21, 7, 12, tzinfo=UTC),
            user=_t(hostile, "CONTOSO\\jörg"),
            mailbox_site=_t(hostile, "Hamburg"),
        ),
    )
    ok = dict(scan_status="ok", install_path=_t(hostile, INSTALL), ps_version="1.0")
    return (
        ServerObservation(
            name=_t(hostile, "CAS01"),
            address=_t(hostile, "127.0.1.1"),
            site=_t(hostile, "Berlin"),
            started_at=t0 + timedelta(seconds=1),
            finished_at=t0 + timedelta(seconds=9),
            computer=_t(hostile, "CAS01"),
            reported_site=_t(hostile, "Berlin"),
            build=_t(hostile, "8.3.83.6"),
            service_pack=_t(hostile, "SP3"),
            rollup=_t(hostile, "Update Rollup 10"),
            build_recognised=True,
            protocols={
                "pop3": _protocol("pop3", False, hostile=hostile, refused=refused),
                "imap4": _protocol("imap4", False, hostile=hostile),
            },
            **ok,  # type: ignore[arg-type]
        ),
        ServerObservation(
            name=_t(hostile, "CAS02"),
            address=_t(hostile, "127.0.1.2"),
            site=_t(hostile, "Berlin"),
            started_at=t0 + timedelta(seconds=1),
            finished_at=t0 + timedelta(seconds=11),
            computer=_t(hostile, "CAS02"),
            reported_site=_t(hostile, "Berlin"),
            site_source="SiteName",
            inventory_site=_t(hostile, "Berlin"),
            build=_t(hostile, "8.3.83.6"),
            service_pack=_t(hostile, "SP3"),
            rollup=hostile,
            build_recognised=True,
            protocols={
                "pop3": _protocol(
                    "pop3",
                    True,
                    hostile=hostile,
                    modified=datetime(2026, 11, 20, 22, 5, 31, tzinfo=UTC),
                    pending_restart=True,
                ),
                "imap4": _protocol("imap4", False, hostile=hostile),
            },
            # a hostile server's own error texts reach the reports' "not evaluated" and
            # "collector error" rows (report/notes.py)
            events_error=hostile,
            collector_errors=((hostile, hostile),) if hostile is not None else (),
            **ok,  # type: ignore[arg-type]
        ),
        ServerObservation(
            name=_t(hostile, "CAS03"),
            address=_t(hostile, "127.0.1.3"),
            site=_t(hostile, "Hamburg"),
            started_at=t0 + timedelta(seconds=2),
            finished_at=t0 + timedelta(seconds=14),
            computer=_t(hostile, "CAS03"),
            reported_site=_t(hostile, "Hamburg"),
            build=_t(hostile, "8.1.240.6"),
            service_pack=_t(hostile, "SP1"),
            rollup=hostile,
            build_recognised=True,
            protocols={
                "pop3": _protocol("pop3", True, hostile=hostile),
                "imap4": _protocol("imap4", False, hostile=hostile, status="missing"),
            },
            **ok,  # type: ignore[arg-type]
        ),
        ServerObservation(
            name=_t(hostile, "CAS04"),
            address=_t(hostile, "127.0.1.4"),
            site=_t(hostile, "München"),
            scan_status="error",
            started_at=t0 + timedelta(seconds=2),
            finished_at=t0 + timedelta(seconds=32),
            error_kind=_t(hostile, "timeout"),
            error=_t(hostile, "No answer from 127.0.1.4:5985 within 30 s."),
            computer=hostile,
            reported_site=hostile,
            build=hostile,
            service_pack=hostile,
            rollup=hostile,
        ),
    )


def _finding(
    rule: str,
    severity: str,
    state: str,
    server: str | None,
    site: str | None,
    protocol: str | None,
    message: str,
    *,
    hostile: str | None,
    observed: str | None = None,
    expected: str | None = None,
    first_seen_run: int | None = RUN_ID,
    first_seen_at: datetime | None = STARTED,
    waiver: dict | None = None,
) -> FindingInfo:
    title = next(t for r, t, _ in CATALOG if r == rule)
    evidence = {"config_sha256": "ab12" * 16} if protocol else {}
    if hostile is not None:
        evidence = {"path": hostile}
    return FindingInfo(
        rule=_t(hostile, rule),
        title=_t(hostile, title),
        severity=severity,
        state=state,
        server=None if server is None else _t(hostile, server),
        site=None if site is None else _t(hostile, site),
        protocol=None if protocol is None else _t(hostile, protocol),
        message=_t(hostile, message),
        remediation=_t(hostile, f"See the catalog entry {rule}."),
        observed=None if observed is None else _t(hostile, observed),
        expected=None if expected is None else _t(hostile, expected),
        first_seen_run=first_seen_run,
        first_seen_at=first_seen_at,
        evidence=evidence,
        waiver=waiver,
    )


def _findings(hostile: str | None) -> tuple[FindingInfo, ...]:
    earlier = datetime(2026, 11, 14, 9, 30, tzinfo=UTC)
    waiver = {
        "justification": _t(hostile, "Partner mailboxes in Hamburg until migration"),
        "approver": _t(hostile, "J. Weber, CISO"),
        "expires": _t(hostile, "2027-03-31"),
    }
    h = hostile
    return (
        _finding("XS-001", "high", "new", "CAS02", "Berlin", "pop3",
                 "CAS02 POP3 allows cross-site sessions (file value true); the baseline is false.",
                 hostile=h, observed="true", expected="false"),
        _finding("XS-003", "high", "new", "CAS02", "Berlin", "pop3",
                 "CAS02 POP3 changed from false to true between run 6 and run 7 while the build "
                 "changed from 8.1.240.6 to 8.3.83.6.",
                 hostile=h, observed="true", expected="false"),
        _finding("XS-005", "medium", "new", "CAS02", "Berlin", "pop3",
                 "CAS02 POP3: the config file was written at 2026-11-20 22:05:31 UTC, after the "
                 "service started; the running service still uses the old value.",
                 hostile=h),
        _finding("XS-006", "high", "persisting", "CAS03", "Hamburg", "imap4",
                 "CAS03 IMAP4: the config file is missing.", hostile=h,
                 observed="unknown", expected="false", first_seen_run=6, first_seen_at=earlier),
        _finding("XS-001", "high", "waived", "CAS03", "Hamburg", "pop3",
                 "CAS03 POP3 allows cross-site sessions (file value true); the baseline is false.",
                 hostile=h, observed="true", expected="false", first_seen_run=5,
                 first_seen_at=earlier - timedelta(days=7), waiver=waiver),
        _finding("XS-011", "high", "persisting", "CAS04", "München", None,
                 "CAS04 could not be scanned: timeout.", hostile=h,
                 first_seen_run=6, first_seen_at=earlier),
        _finding("XS-009", "medium", "new", None, "Berlin", "pop3",
                 "Site Berlin: POP3 is true on CAS02 and false on CAS01.", hostile=h),
        _finding("XS-010", "medium", "waiver-expired", "CAS01", "Berlin", "pop3",
                 "CAS01 POP3 refused 1 cross-site logon since the previous scan.", hostile=h,
                 first_seen_run=6, first_seen_at=earlier,
                 waiver={"approver": _t(h, "IT-Sicherheit"), "expires": _t(h, "2026-11-01")}),
        _finding("XS-012", "info", "persisting", "CAS03", "Hamburg", None,
                 "CAS03 runs Exchange 2007 SP1 (8.1.240.6), below SP3.", hostile=h,
                 observed="8.1.240.6", expected="8.3.83.6", first_seen_run=1,
                 first_seen_at=datetime(2026, 10, 3, 9, 0, tzinfo=UTC)),
    )


def _rules(hostile: str | None) -> tuple[RuleInfo, ...]:
    return tuple(
        RuleInfo(
            id=_t(hostile, rule),
            title=_t(hostile, title),
            severity="medium" if rule == "XS-010" else severity,
            default_severity=severity,
            rationale=_t(hostile, f"Why {rule} matters to an auditor."),
            remediation=_t(hostile, f"How to fix {rule}."),
            references=(_t(hostile, "https://learn.microsoft.com/exchange/kb-944025"),),
        )
        for rule, title, severity in CATALOG
    )


def sample_report(lang: str = "en", hostile: str | None = None) -> RunReport:
    """The seventh run of the lab organisation (see the module docstring)."""
    h = hostile
    run = RunRow(
        id=RUN_ID,
        started_at=STARTED,
        finished_at=FINISHED,
        status="partial",
        servers_planned=5,
        servers_scanned=3,
        servers_failed=2,
        tool_version=_t(h, "0.1.0"),
        catalog_version=_t(h, "2026.11"),
        operator=_t(h, "CONTOSO\\auditor"),
        scanning_host=_t(h, "audit-vm01"),
        inventory_sha256=hashlib.sha256(b"inventory").hexdigest(),
        policy_sha256=None,
        policy_text=None,
        organisation=_t(h, "Contoso Ltd."),
        site_filter=h,
    )
    servers = _servers(h)
    scope = tuple(
        ScopeEntry(s.name, s.address, s.site, s.scan_status, s.error_kind, s.error)
        for s in servers
    ) + (
        ScopeEntry(_t(h, "CAS05"), _t(h, "127.0.1.5"), _t(h, "Köln"), "error",
                   _t(h, "refused"), _t(h, "Connection refused by 127.0.1.5:5985.")),
    )
    before_at = datetime(2026, 11, 14, 9, 30, 40, tzinfo=UTC)
    after_at = datetime(2026, 11, 21, 9, 30, 11, tzinfo=UTC)
    changes = (
        ChangeInfo(_t(h, "CAS02"), _t(h, "Berlin"), None, "build", _t(h, "8.1.240.6"),
                   _t(h, "8.3.83.6"), 6, 7, before_at, after_at, True),
        ChangeInfo(_t(h, "CAS02"), _t(h, "Berlin"), _t(h, "pop3"), "allow_cross_site",
                   _t(h, "false"), _t(h, "true"), 6, 7, before_at, after_at, True),
        ChangeInfo(_t(h, "CAS02"), _t(h, "Berlin"), _t(h, "pop3"), "config_sha256",
                   _t(h, "9f" * 32), _t(h, "4c" * 32), 6, 7, before_at, after_at, True),
    )
    waivers = (
        WaiverInfo(_t(h, "XS-001"), _t(h, "server CAS03 / pop3"),
                   _t(h, "Partner mailboxes in Hamburg until migration"),
                   _t(h, "J. Weber, CISO"), _t(h, "2026-11-01"), _t(h, "2027-03-31"), "active"),
        WaiverInfo(_t(h, "XS-010"), _t(h, "site Berlin"), _t(h, "Known test accounts"),
                   _t(h, "IT-Sicherheit"), _t(h, "2026-06-01"), _t(h, "2026-11-01"), "expired"),
    )
    trend = tuple(
        TrendPoint(
            run_id=run_id,
            started_at=STARTED - timedelta(days=7 * (RUN_ID - run_id)),
            active_by_severity=counts,
        )
        for run_id, counts in (
            (3, {"high": 1, "info": 2}),
            (4, {"high": 1, "info": 2, "low": 1}),
            (5, {"info": 1}),
            (6, {"high": 2, "medium": 1, "low": 1, "info": 1}),
            (7, {"high": 4, "medium": 3, "info": 1}),
        )
    )
    # CAS01's IMAP4 value put back under ticket CHG-1234 between run 6 and this run
    applied = ChangeRecord(
        ticket="CHG-1234", kind="apply", operator=_t(h, "admin as CONTOSO\\fixer"), server_name=_t(h, "CAS01"),
        protocol=_t(h, "imap4"), config_path=_t(h, "C:\\Exchange\\Microsoft.Exchange.Imap4.exe.config"),
        before_sha256=_t(h, "9f" * 32), after_sha256=_t(h, "4c" * 32), found_sha256=_t(h, "9f" * 32),
        backup_path=_t(h, "C:\\Exchange\\Microsoft.Exchange.Imap4.exe.config.CHG-1234-20261120T100000Z.bak"),
        restart=_t(h, "none"), result=_t(h, "done"), message=_t(h, "written and checked"),
        changed_at=datetime(2026, 11, 20, 10, 0, tzinfo=UTC))
    return RunReport(
        run=run,
        lang=lang,
        servers=servers,
        scope=scope,
        findings=_findings(h),
        resolved=(ResolvedInfo(_t(h, "XS-002"), _t(h, "CAS01"), _t(h, "imap4"), applied),),
        changes=changes,
        waivers=waivers,
        rules=_rules(h),
        trend=trend,
        applied_changes=(applied,),
        applied_window=(STARTED - timedelta(days=7), FINISHED),
    )


def large_report(n_findings: int, lang: str = "en") -> RunReport:
    """The sample organisation with `n_findings` findings (for the export benchmark)."""
    base = sample_report(lang)
    template = base.findings
    findings = []
    for i in range(n_findings):
        f = template[i % len(template)]
        server = f"CAS{i % 5000:04d}"
        findings.append(
            FindingInfo(
                rule=f.rule, title=f.title, severity=f.severity, state=f.state,
                server=server, site=f.site, protocol=f.protocol,
                message=f"{server}: {f.message}", remediation=f.remediation,
                observed=f.observed, expected=f.expected,
                first_seen_run=f.first_seen_run, first_seen_at=f.first_seen_at,
                evidence=f.evidence, waiver=f.waiver,
            )
        )
    return RunReport(
        run=base.run, lang=lang, servers=base.servers, scope=base.scope,
        findings=tuple(findings), resolved=base.resolved, changes=base.changes,
        waivers=base.waivers, rules=base.rules, trend=base.trend,
    )
