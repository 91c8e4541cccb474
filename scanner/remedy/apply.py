"""`cas-audit fix apply` / `fix rollback`: run the reviewed scripts of a plan folder on
their servers over the scanner's WinRM launch (winrm_client.run_collector: the same
bootstraps, deadline and output limits as a scan), and turn each script's result
document into outcomes to show and to record (docs/remediation.md).

The script sent is the file in the plan folder, exactly as reviewed; it must carry the
hashes plan.json lists for its server (a script edited after the review is refused
before anything is sent). The script itself checks the file's hash on the server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from scanner.collect import SCRIPT_ENV_VAR
from scanner.collect.fixscript import (
    FixResult,
    ScriptData,
    read_result,
    read_script_data,
    render_script,
    script_environment,
    sendable_script,
)
from scanner.errors import CollectionError, ConfigError
from scanner.inventory import Target
from scanner.store.changes import ChangeRecord
from scanner.util.xmlsafe import UntrustedXMLError

__all__ = ["ServerOutcome", "change_records", "load_scripts", "run_scripts"]

Kind = Literal["apply", "rollback"]
MAX_SCRIPT_BYTES = 1 << 20


@dataclass(frozen=True)
class ServerOutcome:
    server: str
    result: FixResult | None  # None: the script did not run to its end (error says why)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok


def _plan(folder: Path) -> dict[str, Any]:
    path = folder / "plan.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", hint="write a plan with `cas-audit fix plan --out DIR`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("scripts"), dict):
        raise ConfigError(f"{path} is not a plan of `cas-audit fix plan`")
    return document


def load_scripts(folder: Path, kind: Kind) -> dict[str, tuple[str, ScriptData]]:
    """Server name -> (script text, its data) of every server the plan has a script for;
    ConfigError when a script is missing or does not carry plan.json's hashes."""
    document = _plan(folder)
    planned: dict[str, set[tuple[str, str, str]]] = {}
    for change in document.get("changes", []):
        # a restart only (XS-005) edits no file: its script carries no hashes to check
        hashes = ("", "") if change.get("kind") == "restart" else \
            (str(change.get("before_sha256") or ""), str(change.get("after_sha256") or ""))
        planned.setdefault(str(change["server"]).casefold(), set()).add((str(change["protocol"]), *hashes))
    scripts: dict[str, tuple[str, ScriptData]] = {}
    for server, names in document["scripts"].items():
        name = str(names.get(kind, ""))
        path = folder / name
        if not name or "/" in name or "\\" in name or not path.is_file():
            raise ConfigError(f"the {kind} script of {server} ({path}) is missing from the plan folder")
        raw = path.read_bytes()[:MAX_SCRIPT_BYTES + 1]
        if len(raw) > MAX_SCRIPT_BYTES:
            raise ConfigError(f"{path} is larger than a fix script can be")
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
        try:
            data = read_script_data(text)
        except ValueError as exc:
            raise ConfigError(f"{path} is not a fix script of this plan: {exc}") from None
        try:  # what runs is what `fix plan` renders from this data (comment lines do not run)
            rendered = sendable_script(render_script(data))
        except ValueError:
            rendered = ""
        if sendable_script(text) != rendered:
            raise ConfigError(f"{path} is not the script `fix plan` writes for its changes: its code was edited "
                              "after the review (or another version of cas-audit wrote it), and such a script "
                              "is never sent", hint="write a new plan with `cas-audit fix plan` and review it")
        carried = {(c.protocol, c.before_sha256, c.after_sha256) for c in data.changes}
        if data.kind != kind or data.server.casefold() != str(server).casefold() or \
                carried != planned.get(str(server).casefold(), set()):
            raise ConfigError(f"{path} does not carry the changes plan.json lists for {server}; "
                              "a script edited after the review is never sent",
                              hint="write a new plan with `cas-audit fix plan` and review it")
        scripts[str(server)] = (text, data)
    return scripts


def _one(target: Target, password: str | None, script: str, *, apply: bool, restart: bool, ticket: str,
         timeout_s: float) -> ServerOutcome:
    from scanner.collect import winrm_client

    sent = sendable_script(script)
    env = script_environment(sent, apply=apply, restart=restart, ticket=ticket)
    env.pop(SCRIPT_ENV_VAR, None)  # the launch adds the script itself
    try:
        out = winrm_client.run_collector(target, password, script=sent, env=env, timeout_s=timeout_s)
    except CollectionError as exc:
        return ServerOutcome(target.name, None, str(exc))
    try:
        return ServerOutcome(target.name, read_result(out.stdout))
    except UntrustedXMLError as exc:
        return ServerOutcome(target.name, None, f"the fix script's output could not be read: {exc.reason}")


def run_scripts(scripts: dict[str, tuple[str, ScriptData]], targets: dict[str, Target], password: str | None, *,
                username: str | None, apply: bool, restart: bool, ticket: str, timeout_s: float,
                concurrency: int) -> list[ServerOutcome]:
    """Run each server's script (check only unless `apply`); outcomes in plan order. A
    server of the plan missing from the inventory is an outcome with an error."""
    jobs = []
    outcomes: dict[str, ServerOutcome] = {}
    for server, (text, _data) in scripts.items():
        target = targets.get(server.casefold())
        if target is None:
            outcomes[server] = ServerOutcome(server, None, "not in the inventory")
            continue
        if username:
            target = replace(target, username=username)
        jobs.append((server, target, text))
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {server: pool.submit(_one, target, password, text, apply=apply, restart=restart, ticket=ticket,
                                       timeout_s=timeout_s) for server, target, text in jobs}
        for server, future in futures.items():
            outcomes[server] = future.result()
    return [outcomes[server] for server in scripts]


def change_records(outcomes: Sequence[ServerOutcome], *, kind: str, ticket: str, operator: str) -> list[ChangeRecord]:
    """The history rows of the changes the scripts made in apply mode (one per change of
    every script that ran to its end; a check writes none)."""
    records = []
    for outcome in outcomes:
        if outcome.result is None or outcome.result.mode != "apply":
            continue
        for c in outcome.result.changes:
            records.append(ChangeRecord(
                ticket=ticket, kind=kind, operator=operator, server_name=outcome.server, protocol=c.protocol,
                config_path=c.path, before_sha256=c.expected, after_sha256=c.planned, found_sha256=c.found,
                backup_path=c.backup, restart=c.restart, result=c.status, message=c.message,
                changed_at=datetime.now(UTC)))
    return records
