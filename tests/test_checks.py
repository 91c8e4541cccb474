"""Rule logic XS-001..XS-012 on observations built by hand, including the boundaries."""

from __future__ import annotations

from datetime import timedelta

from rules_fixtures import SP1, SP3, T0, failed, inputs, proto, server

from scanner.judge.checks import CHECKS, CheckInput, RawFinding, run_checks
from scanner.judge.policy import Policy
from scanner.parse.observe import RefusedLogonObservation
from scanner.store.repo import PlannedServer


def fired(inp: CheckInput, rule: str) -> list[RawFinding]:
    return CHECKS[rule].run(inp)


def keys(findings: list[RawFinding]) -> set[tuple[str | None, str | None]]:
    return {(f.server, f.protocol) for f in findings}


HAMBURG_TRUE = Policy.from_text(
    '[baseline]\nallow_cross_site = false\n[[baseline.override]]\nsite = "Hamburg"\nallow_cross_site = true\n'
)


# -- XS-001 / XS-002 --------------------------------------------------------------------


def test_xs001_enabled_where_forbidden() -> None:
    inp = inputs([server("CAS01", pop3=proto("pop3", True)), server("CAS02")])
    found = fired(inp, "XS-001")
    assert keys(found) == {("CAS01", "pop3")}
    f = found[0]
    assert (f.observed, f.expected) == ("true", "false")
    assert f.evidence["baseline_scope"] == "organisation"
    assert f.fields["config_path"].endswith("ClientAccess\\PopImap\\Microsoft.Exchange.Pop3.exe.Config")
    assert fired(inp, "XS-002") == []


def test_xs002_disabled_where_required_by_site_override() -> None:
    inp = inputs(
        [server("CAS05", site="Hamburg", value=False), server("CAS06", site="hamburg", value=True)],
        policy=HAMBURG_TRUE,
    )
    assert keys(fired(inp, "XS-002")) == {("CAS05", "pop3"), ("CAS05", "imap4")}
    assert fired(inp, "XS-001") == []  # CAS06 is allowed by the (case-insensitive) site override
    assert fired(inp, "XS-002")[0].evidence["baseline_scope"] == "site Hamburg"


def test_xs001_xs002_unknown_value_is_neither() -> None:
    inp = inputs([server(pop3=proto("pop3", None, status="invalid-value", raw="yes"))], policy=HAMBURG_TRUE)
    assert fired(inp, "XS-001") == [] and ("CAS01", "pop3") not in keys(fired(inp, "XS-002"))


def test_key_absent_counts_as_false_against_the_baseline() -> None:
    inp = inputs([server("CAS05", site="Hamburg", pop3=proto("pop3", False, source="default"))], policy=HAMBURG_TRUE)
    assert ("CAS05", "pop3") in keys(fired(inp, "XS-002"))


# -- XS-003 / XS-004 --------------------------------------------------------------------


def test_first_scan_ever_has_no_change_findings() -> None:
    inp = inputs([server(value=True)], run_id=1)
    assert fired(inp, "XS-003") == [] and fired(inp, "XS-004") == []


def test_xs003_value_changed_with_build() -> None:
    before = server(build=SP1, sp="SP1", value=True, at=T0 - timedelta(days=7))
    after = server(build=SP3, value=False)
    inp = inputs([after], run_id=2, previous={"CAS01": (1, before)})
    found = fired(inp, "XS-003")
    assert keys(found) == {("CAS01", "pop3"), ("CAS01", "imap4")}
    ev = found[0].evidence
    assert ev["before"]["allow_cross_site"] is True and ev["after"]["allow_cross_site"] is False
    assert (ev["before"]["build"], ev["after"]["build"]) == (SP1, SP3)
    assert (ev["before"]["run"], ev["after"]["run"]) == (1, 2)
    assert ev["before"]["config_sha256"] != ev["after"]["config_sha256"]
    assert found[0].fields["run_before"] == "1" and found[0].fields["date_before"] == "2026-11-13"
    assert fired(inp, "XS-004") == []


def test_build_changed_but_value_not_is_no_finding() -> None:
    inp = inputs([server(build=SP3, value=True)], previous={"CAS01": (1, server(build=SP1, sp="SP1", value=True))})
    assert fired(inp, "XS-003") == [] and fired(inp, "XS-004") == []


def test_xs004_value_changed_same_build() -> None:
    inp = inputs([server(pop3=proto("pop3", True))], previous={"CAS01": (1, server(value=False))})
    found = fired(inp, "XS-004")
    assert keys(found) == {("CAS01", "pop3")}
    assert found[0].evidence["build_changed"] is False
    assert fired(inp, "XS-003") == []


def test_value_changed_twice_over_three_scans() -> None:
    scan1, scan2, scan3 = server(value=False), server(value=True), server(value=False)
    run2 = inputs([scan2], run_id=2, previous={"CAS01": (1, scan1)})
    run3 = inputs([scan3], run_id=3, previous={"CAS01": (2, scan2)})
    assert [f.fields["after"] for f in fired(run2, "XS-004")] == ["true", "true"]
    assert [f.fields["after"] for f in fired(run3, "XS-004")] == ["false", "false"]
    assert {f.evidence["before"]["run"] for f in fired(run3, "XS-004")} == {2}


def test_key_removed_versus_set_false_is_no_change() -> None:
    """Both give the effective value false: the effective value is what counts."""
    before = server(pop3=proto("pop3", False, source="file"))
    after = server(pop3=proto("pop3", False, source="default", notes=("removed",)))
    inp = inputs([after], previous={"CAS01": (1, before)})
    assert fired(inp, "XS-003") == [] and fired(inp, "XS-004") == []
    assert keys(fired(inp, "XS-007")) == {("CAS01", "pop3")}  # the removal itself is reported


def test_unknown_value_on_either_side_is_no_change() -> None:
    bad = server(pop3=proto("pop3", None, status="malformed"))
    good = server(pop3=proto("pop3", True))
    assert fired(inputs([good], previous={"CAS01": (1, bad)}), "XS-004") == []
    assert fired(inputs([bad], previous={"CAS01": (1, good)}), "XS-004") == []


def test_change_is_judged_against_the_last_successful_scan_not_the_failed_one() -> None:
    # run 1 ok (false), run 2 failed, run 3 ok (true): evaluate supplies run 1 as "previous"
    inp = inputs([server(value=True)], run_id=3, previous={"CAS01": (1, server(value=False))})
    found = fired(inp, "XS-004")
    assert {f.evidence["before"]["run"] for f in found} == {1}


def test_unknown_build_cannot_explain_a_change() -> None:
    before = server(build=None, sp=None, recognised=False, value=True)
    inp = inputs([server(value=False)], previous={"CAS01": (1, before)})
    assert fired(inp, "XS-003") == [] and len(fired(inp, "XS-004")) == 2


# -- XS-005 ... XS-007 ------------------------------------------------------------------


def test_xs005_pending_restart_only_for_a_running_service_started_before_the_write() -> None:
    edited = proto("pop3", True, started=T0 - timedelta(days=2), modified=T0 - timedelta(hours=1))
    restarted = proto("imap4", True, started=T0 - timedelta(minutes=5), modified=T0 - timedelta(hours=1))
    inp = inputs([server(pop3=edited, imap4=restarted)])
    found = fired(inp, "XS-005")
    assert keys(found) == {("CAS01", "pop3")}
    assert found[0].fields["config_modified"] == "2026-11-20T09:00:00Z"
    stopped = proto("pop3", True, service="Stopped", started=None, modified=T0)
    assert fired(inputs([server(pop3=stopped)]), "XS-005") == []


def test_xs006_each_bad_status() -> None:
    for status in ("missing", "unreadable", "malformed", "invalid-value"):
        inp = inputs([server(pop3=proto("pop3", None, status=status, detail="the file is gone"))])
        found = fired(inp, "XS-006")
        assert keys(found) == {("CAS01", "pop3")}, status
        assert found[0].fields["config_status"] == status
    assert fired(inputs([server()]), "XS-006") == []


def test_xs007_notes() -> None:
    inp = inputs([server(imap4=proto("imap4", True, notes=("duplicate key (2 entries)", "file=extra.config")))])
    found = fired(inp, "XS-007")
    assert keys(found) == {("CAS01", "imap4")}
    assert found[0].fields["notes"] == "duplicate key (2 entries); file=extra.config"


# -- XS-008 / XS-009 --------------------------------------------------------------------


def test_xs008_protocols_disagree() -> None:
    inp = inputs([server(pop3=proto("pop3", True), imap4=proto("imap4", False)), server("CAS02")])
    found = fired(inp, "XS-008")
    assert keys(found) == {("CAS01", None)}
    assert (found[0].fields["pop3_value"], found[0].fields["imap4_value"]) == ("true", "false")


def test_xs008_not_when_the_policy_wants_them_to_differ_or_a_value_is_unknown() -> None:
    policy = Policy.from_text('[[baseline.override]]\nserver = "CAS01"\nprotocol = "pop3"\nallow_cross_site = true\n')
    inp = inputs([server(pop3=proto("pop3", True), imap4=proto("imap4", False))], policy=policy)
    assert fired(inp, "XS-008") == []
    unknown = inputs([server(pop3=proto("pop3", None, status="malformed"), imap4=proto("imap4", True))])
    assert fired(unknown, "XS-008") == []


def test_xs009_one_finding_per_site_and_protocol() -> None:
    inp = inputs(
        [
            server("CAS01", site="Berlin", pop3=proto("pop3", True)),
            server("CAS02", site="berlin"),
            server("CAS03", site="Hamburg", value=True),
            server("CAS04", site="Hamburg", value=True),
        ]
    )
    found = fired(inp, "XS-009")
    assert [(f.server, f.site, f.protocol) for f in found] == [(None, "Berlin", "pop3")]
    assert found[0].evidence["servers"] == {"CAS01": True, "CAS02": False}
    assert found[0].fields["values"] == "CAS01=true, CAS02=false"


def test_xs009_ignores_failed_servers_and_policy_intended_differences() -> None:
    policy = Policy.from_text('[[baseline.override]]\nserver = "cas01"\nallow_cross_site = true\n')
    inp = inputs([server("CAS01", value=True), server("CAS02")], policy=policy)
    assert fired(inp, "XS-009") == []
    inp = inputs([server("CAS01", value=True), failed("CAS02")])
    assert fired(inp, "XS-009") == []


# -- XS-010 ... XS-012 ------------------------------------------------------------------


def test_xs010_refused_logons_with_users_and_sites() -> None:
    logons = [
        RefusedLogonObservation(T0 - timedelta(hours=3), "CONTOSO\\jörg", "Hamburg"),
        RefusedLogonObservation(T0 - timedelta(hours=2), "CONTOSO\\anna", "Hamburg"),
        RefusedLogonObservation(T0 - timedelta(hours=1), "CONTOSO\\jörg", "München"),
    ]
    inp = inputs([server(pop3=proto("pop3", False, logons=logons), events_since=T0 - timedelta(days=1))])
    found = fired(inp, "XS-010")
    assert keys(found) == {("CAS01", "pop3")}
    ev = found[0].evidence
    assert ev["count"] == 3
    assert ev["users"] == ["CONTOSO\\anna", "CONTOSO\\jörg"]
    assert ev["mailbox_sites"] == ["Hamburg", "München"]
    assert ev["since"] == "2026-11-19T10:00:00Z" and ev["first_at"] == "2026-11-20T07:00:00Z"
    assert fired(inputs([server()]), "XS-010") == []


def test_xs010_does_not_count_events_already_reported_by_the_previous_scan() -> None:
    old = RefusedLogonObservation(T0 - timedelta(days=7, hours=1), "CONTOSO\\anna", "Hamburg")
    new = RefusedLogonObservation(T0 - timedelta(hours=1), "CONTOSO\\jörg", "Hamburg")
    before = server(pop3=proto("pop3", False, logons=[old]), at=T0 - timedelta(days=7))
    overlap = inputs([server(pop3=proto("pop3", False, logons=[old]))], previous={"CAS01": (1, before)})
    assert fired(overlap, "XS-010") == []
    both = inputs([server(pop3=proto("pop3", False, logons=[old, new]))], previous={"CAS01": (1, before)})
    (found,) = fired(both, "XS-010")
    assert found.evidence["count"] == 1 and found.evidence["users"] == ["CONTOSO\\jörg"]
    assert found.evidence["already_reported"] == 1


def test_xs011_failed_and_never_scanned() -> None:
    planned = [PlannedServer("CAS01", "cas01", "Berlin"), PlannedServer("CAS02", "cas02", "Berlin"), PlannedServer("CAS03", "cas03", None)]
    inp = inputs([server("CAS01"), failed("CAS02", kind="refused")], planned=planned)
    found = fired(inp, "XS-011")
    assert [(f.server, f.evidence["error_kind"]) for f in found] == [("CAS02", "refused"), ("CAS03", "not-scanned")]
    assert found[0].evidence["error"] == "no answer within 120 s"


def test_failed_server_yields_only_xs011() -> None:
    inp = inputs([failed("CAS02")])
    assert [f.rule for f in run_checks(inp)] == ["XS-011"]


def test_xs012_below_sp3_or_unrecognised() -> None:
    inp = inputs(
        [
            server("CAS01", build=SP1, sp="SP1"),
            server("CAS02"),
            server("CAS03", build="8.3.83.6", sp="SP3", recognised=True),
            server("CAS04", build="14.3.123.4", sp=None, recognised=False),
            server("CAS05", build=None, sp=None, recognised=False),
        ]
    )
    found = fired(inp, "XS-012")
    assert [f.server for f in found] == ["CAS01", "CAS04", "CAS05"]
    assert all(f.protocol is None for f in found)
    assert found[2].fields["build"] is None  # rendered with the catalog's "unknown build"


def test_every_check_runs_on_a_clean_fleet_without_findings() -> None:
    clean = [server(f"CAS0{i}") for i in range(1, 4)]
    inp = inputs(clean, run_id=3, previous={o.name: (2, o) for o in clean})
    assert run_checks(inp) == []
