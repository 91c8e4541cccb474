"""The demo organisation moved to test-only loopback addresses, running in this process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import Fleet, relocate_fleet
from scanner.lab.serve import Lab, demo_fleet_path


def demo_fleet(base_address: str, auth: str = "ntlm") -> Fleet:
    """The built-in demo fleet on `base_address`.. with a free port per server. For Basic,
    every server gets what Windows needs for it over http: a local account and
    AllowUnencrypted (docs/lab.md)."""
    fleet = relocate_fleet(load_fleet(demo_fleet_path()), base_address, 0)
    if auth == "basic":
        fleet = replace(fleet, servers=tuple(replace(s, account="local", allow_unencrypted=True)
                                             for s in fleet.servers))
    return replace(fleet, lab=replace(fleet.lab, auth=auth))


@contextmanager
def running(fleet: Fleet, folder: Path) -> Iterator[tuple[Lab, Path]]:
    """The lab running, and the inventory it wrote."""
    with Lab(fleet) as lab:
        inventory = folder / "inventory.toml"
        lab.write_inventory(inventory)
        yield lab, inventory


def cas_audit(*args: str, password: str | None = "lab-password", db: str | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a child process, as a scheduled job would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    if password is not None:
        env["CAS_AUDIT_PASSWORD"] = password
    if db is not None:
        env["CAS_AUDIT_DB"] = db
    return subprocess.run([sys.executable, "-m", "scanner", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def cas_audit_here(*args: str, password: str | None = "lab-password", db: str | None = None
                   ) -> subprocess.CompletedProcess[str]:
    """The same command through click's CliRunner in this process: for tests about what a
    command does, not about the process (signals, file descriptors, the environment's
    effect on start-up); saves the child's imports (about 1.5 s of CPU for a scan)."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CAS_AUDIT_")}
    if password is not None:
        env["CAS_AUDIT_PASSWORD"] = password
    if db is not None:
        env["CAS_AUDIT_DB"] = db
    return invoke_here(args, env)


def invoke_here(args: tuple[str, ...] | list[str], env: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    """`cas-audit ARGS` through click's CliRunner with `env` (None removes a variable), as a
    CompletedProcess. An exception the command did not turn into an exit code is raised, as
    a child's traceback would fail the test."""
    from click.testing import CliRunner

    from scanner.cli import cli

    result = CliRunner().invoke(cli, list(args), env=env, prog_name="cas-audit")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["cas-audit", *args], result.exit_code, result.stdout, result.stderr)


def many_servers(count: int, sites: tuple[str, ...], base_address: str, auth: str = "basic") -> Fleet:
    """`count` servers copied from the demo's clean CAS01, spread over `sites` in turn
    (names like BER007), on consecutive loopback addresses from `base_address`."""
    from scanner.lab.fleet_model import server_addresses

    fleet = demo_fleet(base_address, auth)
    template = replace(fleet.server("CAS01"), fault="", computer="", fqdn="")
    addresses = server_addresses(base_address, count)
    servers = tuple(
        replace(template, name=f"{sites[i % len(sites)][:3].upper()}{i:03d}", site=sites[i % len(sites)],
                address=addresses[i])
        for i in range(count)
    )
    return replace(fleet, servers=servers)


def database_bytes(path: Path) -> int:
    """Size of a SQLite history once its WAL is folded in and free pages are dropped."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        return int(conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
