"""Issue 9, part 5: several scanners, one PostgreSQL. Four `cas-audit scan --site` processes
start at once against an empty database (so they also race to create the schema); every
run completes, nothing is stored twice, and the organisation view afterwards shows every
server from its own site's run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from labfleet import cas_audit_here, many_servers
from sqlalchemy import create_engine, text

from scanner.lab.serve import Lab

SITES = ("Berlin", "Hamburg", "Munich", "Vienna")
PER_SITE = 2  # two per site: each run stores documents another run also stores


@pytest.mark.slow
def test_four_scanners_into_one_postgresql(tmp_path: Path, pg_url: str) -> None:
    fleet = many_servers(len(SITES) * PER_SITE, SITES, "127.0.9.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    env.update(CAS_AUDIT_PASSWORD="lab-password", CAS_AUDIT_DB=pg_url)
    with Lab(fleet) as lab:
        inventory = tmp_path / "inventory.toml"
        lab.write_inventory(inventory)
        scanners = [
            subprocess.Popen([sys.executable, "-m", "scanner", "scan", "--inventory", str(inventory), "--site", site,
                              "--concurrency", str(PER_SITE), "--timeout", "60"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            for site in SITES
        ]
        outcomes = [(p.wait(timeout=300), p.stderr.read().decode() if p.stderr else "") for p in scanners]
    # 0 or 1 (the demo CAS01's refused logons are a finding): never 3 (unscanned) or 4
    assert all(code in (0, 1) for code, _err in outcomes), outcomes

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(text("SELECT id, status, servers_planned, servers_scanned, site_filter "
                                     "FROM scan_runs ORDER BY id")).all()
            servers = conn.execute(text("SELECT count(*), count(DISTINCT name_key) FROM servers")).one()
            scans = conn.execute(text("SELECT count(*), count(DISTINCT server_id) FROM server_scans")).one()
            documents = conn.execute(text("SELECT count(*), count(DISTINCT sha256) FROM documents")).one()
    finally:
        engine.dispose()
    assert sorted(r.site_filter for r in runs) == sorted(SITES)
    assert all((r.status, r.servers_planned, r.servers_scanned) == ("complete", PER_SITE, PER_SITE) for r in runs)
    assert tuple(servers) == (len(SITES) * PER_SITE,) * 2  # each server once
    assert tuple(scans) == (len(SITES) * PER_SITE,) * 2  # each scanned once
    assert documents[0] == documents[1]
    run_of_site = {r.site_filter: r.id for r in runs}

    result = cas_audit_here("report", "--as-of", "now", "--format", "json", db=pg_url)  # only read
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert sorted(s["name"] for s in view["servers"]) == sorted(s.name for s in fleet.servers)
    assert all(s["run_id"] == run_of_site[s["site"]] and not s["stale"] for s in view["servers"])
    keys = [(f["rule"], f["server"], f["protocol"], f["evidence"].get("site")) for f in view["findings"]]
    assert len(keys) == len(set(keys))  # nothing twice
    assert {f["server"] for f in view["findings"] if f["server"]} == {s.name for s in fleet.servers}
