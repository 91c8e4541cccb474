"""`scan` exit codes (docs/contracts.md): --fail-on counts active findings after waivers and the
policy's severity overrides; an unscanned server wins over findings."""

from __future__ import annotations

from pathlib import Path

import pytest
from labfleet import cas_audit_here

from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import relocate_fleet
from scanner.lab.serve import Lab

pytestmark = pytest.mark.slow  # scans of a running lab (in process)

HERE = Path(__file__).parent / "fleets"
# Scan 1 of the three-scan organisation has: XS-001 on B2 waived (high), XS-009 Berlin
# (medium), XS-008 B2 (low), XS-012 H1/H2 (info); nothing active at high.
POLICY = (HERE / "three_scans_policy.toml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def inventory(tmp_path_factory) -> object:
    folder = tmp_path_factory.mktemp("exit")
    fleet = relocate_fleet(load_fleet(HERE / "three_scans.toml"), "127.0.16.1", 0)
    with Lab(fleet) as lab:
        lab.write_inventory(folder / "inventory.toml")
        yield folder / "inventory.toml"


@pytest.mark.parametrize(
    ("extra_policy", "fail_on", "code"),
    [
        ("", "high", 0),        # the only high finding is waived
        ("", "medium", 1),      # XS-009 is active and medium
        ('\n[severity]\n"XS-009" = "low"\n', "medium", 0),   # overridden below the bar
        ('\n[severity]\n"XS-012" = "critical"\n', "high", 1),  # overridden above it
        ("", "info", 1),
    ],
)
def test_fail_on_uses_severities_after_waivers_and_overrides(
        tmp_path: Path, inventory: Path, extra_policy: str, fail_on: str, code: int) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + extra_policy, encoding="utf-8")
    result = cas_audit_here("scan", "--inventory", str(inventory), "--policy", str(policy),
                            "--fail-on", fail_on, db=f"sqlite:///{tmp_path / 'h.db'}")
    assert result.returncode == code, result.stderr


def test_site_filter_scans_only_that_site(tmp_path: Path, inventory: Path) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    result = cas_audit_here("scan", "--inventory", str(inventory), "--site", "hamburg", "--fail-on", "critical", db=db)
    assert result.returncode == 0, result.stderr
    assert "3 scanned, 0 failed" in result.stderr
