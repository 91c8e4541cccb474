"""The site comes from the server itself (issue 15, item 1): collect.ps1 reads Netlogon's
SiteName, then DynamicSiteName, from the local registry, so a WinRS session without
delegated credentials (every NTLM session) needs no domain controller. Scanned through the
real pywinrm against an NTLM lab and stored in a real SQLite history."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import tomli_w
from labfleet import many_servers

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy
from scanner.lab.fleet_model import Fleet
from scanner.lab.serve import Lab
from scanner.parse.observe import ServerObservation
from scanner.report.build import build_report
from scanner.report.write import render
from scanner.scan import run_scan
from scanner.store.repo import open_store


def scan(fleet: Fleet, tmp_path: Path, sites: dict[str, str],
         reports: dict[str, bytes] | None = None) -> dict[str, ServerObservation]:
    """Scan `fleet` over NTLM with an inventory that names only the sites in `sites`; fill
    `reports` with the run's JSON report and its CSV in English and German."""
    assert fleet.lab.auth == "ntlm"  # NTLM: no credentials to pass on to a domain controller
    with Lab(fleet) as lab:
        written = lab.inventory()
        for entry in written["server"]:
            entry.pop("site")
            if entry["name"] in sites:
                entry["site"] = sites[entry["name"]]
        path = tmp_path / "inventory.toml"
        path.write_text(tomli_w.dumps(written), encoding="utf-8")
        inventory = load_inventory(path)
        with open_store(f"sqlite:///{tmp_path / 'history.db'}") as store:
            outcome = run_scan(inventory, store=store, password="lab-password", policy=Policy.default(),
                               catalog=load_catalog(), concurrency=4, timeout_s=20)
            if reports is not None:
                reports["json"] = render(build_report(store, outcome.run_id), "json")
                for lang in ("en", "de"):
                    reports[f"csv-{lang}"] = render(build_report(store, outcome.run_id, lang=lang), "csv")
            return {obs.name: obs for obs in store.server_observations(outcome.run_id)}


def test_an_ntlm_lab_without_sites_in_the_inventory_gets_every_site_right(tmp_path: Path) -> None:
    fleet = many_servers(4, ("Berlin", "Hamburg"), "127.0.43.1", auth="ntlm")
    servers = list(fleet.servers)
    servers[3] = replace(servers[3], site_value="DynamicSiteName")  # what Netlogon found itself
    found = scan(replace(fleet, servers=tuple(servers)), tmp_path, sites={})
    for server in servers:
        obs = found[server.name]
        assert obs.scan_status == "ok", obs.error
        assert (obs.site, obs.reported_site, obs.inventory_site) == (server.site, server.site, None)
        assert obs.site_source == server.site_value
        assert [stage for stage, _ in obs.collector_errors if stage == "site"] == []
        assert not obs.site_differs


def test_the_server_site_wins_over_the_inventory_and_an_unreadable_site_stays_unknown(tmp_path: Path) -> None:
    fleet = many_servers(3, ("Berlin",), "127.0.44.1", auth="ntlm")
    first, second, third = fleet.servers
    fleet = replace(fleet, servers=(first, second, replace(third, site_value="none")))
    reports: dict[str, bytes] = {}
    found = scan(fleet, tmp_path, sites={first.name: "Berlin", second.name: "Hamburg", third.name: "Berlin"},
                 reports=reports)
    agreed, moved, unread = found[first.name], found[second.name], found[third.name]
    assert (agreed.site, agreed.inventory_site, agreed.site_differs) == ("Berlin", "Berlin", False)
    # the inventory planned Hamburg; the server's Netlogon says Berlin: the fact wins, and it shows
    assert (moved.site, moved.inventory_site, moved.site_differs) == ("Berlin", "Hamburg", True)
    # neither Netlogon value: unknown with the collector's reason, never the inventory's plan
    assert (unread.site, unread.site_source, unread.inventory_site, unread.site_differs) == (
        None, None, "Berlin", True)
    [(stage, message)] = unread.collector_errors
    assert stage == "site" and "no SiteName or DynamicSiteName" in message
    # every report format says so, in both languages
    servers = {s["name"]: s for s in json.loads(reports["json"])["servers"]}
    assert (servers[first.name]["site"], servers[first.name]["inventory_site"]) == ("Berlin", None)
    assert (servers[second.name]["site"], servers[second.name]["inventory_site"]) == ("Berlin", "Hamburg")
    assert servers[second.name]["site_source"] == "SiteName"
    assert (servers[third.name]["site"], servers[third.name]["inventory_site"]) == (None, "Berlin")
    assert [e["stage"] for e in servers[third.name]["collector_errors"]] == ["site"]
    english, german = reports["csv-en"].decode("utf-8-sig"), reports["csv-de"].decode("utf-8-sig")
    assert f"The inventory plans site 'Hamburg' for {second.name}, but its Netlogon reports 'Berlin'" in english
    assert f"The inventory plans site 'Berlin' for {third.name}, but the server's own site could not be read" in english
    assert f"Das Inventar sieht für {second.name} den Standort 'Hamburg' vor, sein Netlogon meldet aber 'Berlin'" in german
    assert f"site 'Hamburg' for {first.name}" not in english and f"for {first.name}, but" not in english
