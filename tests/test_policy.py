"""Policy files: baseline precedence, globs, waivers and their expiry, malformed files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.judge.policy import Policy, load_policy

PRECEDENCE = """
[baseline]
allow_cross_site = false

[[baseline.override]]
site = "Hamburg"
allow_cross_site = true

[[baseline.override]]
site = "Hamburg"
protocol = "imap4"
allow_cross_site = false

[[baseline.override]]
server = "CAS0*"
allow_cross_site = true

[[baseline.override]]
server = "cas07"
protocol = "pop3"
allow_cross_site = false
"""


def test_default_policy_forbids_cross_site_everywhere() -> None:
    policy = Policy.default()
    assert policy.baseline("ANY", "Anywhere", "pop3").allow_cross_site is False
    assert policy.baseline("ANY", None, "imap4").source == "organisation"
    assert policy.waivers == () and len(policy.sha256) == 64


def test_most_specific_baseline_wins() -> None:
    p = Policy.from_text(PRECEDENCE)
    assert p.baseline("MBX1", "Berlin", "pop3") == p.baseline("MBX1", None, "imap4")
    assert p.baseline("MBX1", "Berlin", "pop3").allow_cross_site is False  # organisation
    assert p.baseline("HH1", "hamburg", "pop3").allow_cross_site is True  # site, case-insensitive
    assert p.baseline("HH1", "Hamburg", "imap4").allow_cross_site is False  # site + protocol beats site
    # server beats site + protocol
    assert p.baseline("cas05", "Hamburg", "imap4").allow_cross_site is True
    assert p.baseline("cas05", "Hamburg", "imap4").source == "server CAS0*"
    # server + protocol beats server
    assert p.baseline("CAS07", "Hamburg", "pop3").allow_cross_site is False
    assert p.baseline("CAS07", "Hamburg", "pop3").source == "server cas07 / pop3"
    assert p.baseline("CAS07", "Hamburg", "imap4").allow_cross_site is True


def test_later_override_of_equal_rank_wins() -> None:
    text = '[[baseline.override]]\nserver = "CAS*"\nallow_cross_site = true\n[[baseline.override]]\nserver = "CAS1*"\nallow_cross_site = false\n'
    p = Policy.from_text(text)
    assert p.baseline("CAS12", None, "pop3").allow_cross_site is False
    assert p.baseline("CAS22", None, "pop3").allow_cross_site is True


WAIVERS = """
[[waiver]]
rule = "XS-001"
server = "cas0?"
protocol = "pop3"
justification = "Partner mailboxes in Hamburg until migration"
approver = "J. Weber, CISO"
created = 2026-11-01
expires = 2027-03-31

[[waiver]]
rule = "XS-009"
site = "Hamburg"
justification = "Consolidation"
approver = "A. Auditor"
expires = 2026-12-31
"""


def test_waiver_scope_and_expiry_boundaries() -> None:
    p = Policy.from_text(WAIVERS)
    on_last_day = p.waiver_for("XS-001", "CAS07", "Berlin", "pop3", date(2027, 3, 31))
    assert on_last_day is not None and not on_last_day.expired_on(date(2027, 3, 31))
    day_after = p.waiver_for("XS-001", "CAS07", "Berlin", "pop3", date(2027, 4, 1))
    assert day_after is not None and day_after.expired_on(date(2027, 4, 1))
    assert p.waiver_for("XS-001", "CAS07", "Berlin", "pop3", date(2026, 10, 31)) is None  # before created
    assert p.waiver_for("XS-001", "CAS07", "Berlin", "imap4", date(2027, 1, 1)) is None  # other protocol
    assert p.waiver_for("XS-001", "CAS17", "Berlin", "pop3", date(2027, 1, 1)) is None  # glob: one character
    assert p.waiver_for("XS-002", "CAS07", "Berlin", "pop3", date(2027, 1, 1)) is None  # other rule
    site = p.waiver_for("XS-009", None, "HAMBURG", "imap4", date(2026, 12, 31))
    assert site is not None and site.as_json(date(2026, 12, 31))["state"] == "active"
    assert site.as_json(date(2027, 1, 1))["state"] == "expired"


def test_an_active_waiver_wins_over_an_expired_one() -> None:
    text = WAIVERS + '\n[[waiver]]\nrule = "XS-001"\nserver = "CAS07"\njustification = "renewed"\napprover = "X"\nexpires = 2027-12-31\n'
    p = Policy.from_text(text)
    chosen = p.waiver_for("XS-001", "CAS07", None, "pop3", date(2027, 6, 1))
    assert chosen is not None and chosen.justification == "renewed"


def test_severity_overrides() -> None:
    p = Policy.from_text('[severity]\n"XS-010" = "Medium"\n')
    assert p.severity_for("XS-010", "low") == "medium"
    assert p.severity_for("XS-001", "high") == "high"


def test_source_text_and_hash_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(WAIVERS, encoding="utf-8")
    p = load_policy(path)
    assert p.source_text == WAIVERS and p.source_path == str(path)
    import hashlib

    assert p.sha256 == hashlib.sha256(WAIVERS.encode()).hexdigest()


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[baseline]\nallow_cross_site = \n", 2, "not valid TOML"),
        ('[baseline]\nallow_cross_site = "no"\n', 2, "'allow_cross_site'"),
        ("[baseline]\nallow_crosssite = true\n", 2, "unknown field"),
        ('[baseline]\n[[baseline.override]]\nsite = "A"\nallow_cross_site = true\n[[baseline.override]]\nallow_cross_site = true\n', 5, "give a scope"),
        ('[[baseline.override]]\nserver = "A"\nsite = "B"\nallow_cross_site = true\n', 3, "not both"),
        ('[[baseline.override]]\nserver = "A"\nprotocol = "smtp"\nallow_cross_site = true\n', 3, "'protocol'"),
        ('[[baseline.override]]\nserver = "A"\n', 1, "allow_cross_site"),
        (WAIVERS.replace('approver = "A. Auditor"\n', ""), 11, "'approver' is required"),
        (WAIVERS.replace("expires = 2027-03-31", 'expires = "2027-03-31"'), 9, "must be a date"),
        (WAIVERS.replace("expires = 2027-03-31", "expires = 2026-10-01"), 9, "before created"),
        (WAIVERS.replace('rule = "XS-009"', 'rule = "XS-099"'), 12, "unknown rule"),
        (WAIVERS.replace('justification = "Consolidation"', 'justification = " "'), 14, "non-empty"),
        (WAIVERS + '\n[[waiver]]\nrule = "XS-001"\njustification = "j"\napprover = "a"\nexpires = 2027-01-01\n', 18, "give a scope"),
        ('[severity]\n"XS-010" = "urgent"\n', 2, "must be one of"),
        ('[severity]\n"XS-100" = "low"\n', 2, "unknown rule"),
        ('[baseline]\nallow_cross_site = false\n[owner]\nname = "x"\n', 3, "unknown top-level key"),
    ],
)
def test_malformed_policy_names_file_line_and_field(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"line {line}" in message or f"{path}:{line}:" in message, message
    assert words in message


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "nope.toml")
