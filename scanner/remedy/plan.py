"""`cas-audit fix plan`: the findings of one run turned into a change plan for review
(plan.json and, per server, a fix script and its rollback twin; docs/remediation.md).

For XS-001 and XS-002, and XS-003 where the reset value breaks the baseline, the target
is the baseline's value (the policy, per server and protocol); the edit is the minimal one
(scanner/remedy/edit.py). XS-005 alone is a restart. Refused, with the reason: a value
from a file=/configSource= target, a file .NET refuses, a server whose latest scan failed,
a file whose bytes are not in the history or changed in a later scan.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from scanner import __version__
from scanner.collect.collected import CollectedReference
from scanner.collect.fixscript import ScriptChange, ScriptData, render_script, safe_file_stem
from scanner.judge.policy import Policy
from scanner.parse.dotnet import sniff_encoding
from scanner.parse.observe import ProtocolObservation, ServerObservation
from scanner.remedy.edit import EditRefused, minimal_edit
from scanner.store.findings import FindingRow
from scanner.util.timefmt import iso_utc

#: The rules a plan acts on; XS-005 is a restart only.
PLAN_RULES = ("XS-001", "XS-002", "XS-003", "XS-005")
_ACTIVE_STATES = ("new", "persisting", "waiver-expired")
_MAX_DIFF_CHARS = 200_000


@dataclass
class FixPlan:
    created_at: datetime
    run_id: int
    policy_sha256: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[dict[str, Any]] = field(default_factory=list)
    scripts: dict[str, dict[str, str]] = field(default_factory=dict)
    script_texts: dict[str, str] = field(default_factory=dict)  # file name -> text (not in plan.json)

    def document(self) -> dict[str, Any]:
        return {
            "plan": {"created_at": iso_utc(self.created_at), "run_id": self.run_id, "tool_version": __version__,
                     "policy_sha256": self.policy_sha256},
            "changes": self.changes,
            "refused": self.refused,
            "unchanged": self.unchanged,
            "scripts": self.scripts,
        }


def clean_text(text: str) -> str:
    """Untrusted text for a human reviewer: every character that is not printable (control
    characters, terminal escapes, bidirectional overrides, odd spaces) shown as \\xNN /
    \\uNNNN; tab and line feed kept."""
    out = []
    for ch in text:
        if ch in "\t\n" or ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def _decode(data: bytes) -> str:
    encoding = sniff_encoding(data)
    codec = {"utf-8-sig": "utf-8-sig", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}.get(encoding, encoding)
    try:
        return data.decode(codec, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def unified_diff(before: bytes, after: bytes, path: str, from_label: str = "scanned", to_label: str = "planned") -> str:
    """A unified diff of two versions of a file, as decoded text made safe to show (a line
    ending in CR is shown with a visible \\r, so a CRLF file reads as one)."""
    a = [clean_text(line.rstrip("\n")) for line in _decode(before).splitlines(keepends=True)]
    b = [clean_text(line.rstrip("\n")) for line in _decode(after).splitlines(keepends=True)]
    name = clean_text(path)
    text = "\n".join(difflib.unified_diff(a, b, f"{name} ({from_label})", f"{name} ({to_label})", lineterm=""))
    return text if len(text) <= _MAX_DIFF_CHARS else text[:_MAX_DIFF_CHARS] + "\n... (diff cut short)"


def _references(p: ProtocolObservation) -> list[CollectedReference] | None:
    ref = p.config_reference
    if ref is None:
        return None
    return [CollectedReference(attribute=ref.attribute, value=ref.value, path=ref.path,
                               exists=ref.outcome != "absent", length=ref.length, modified=ref.modified,
                               error=ref.error, content=ref.content)]


def _wanted(name: str, globs: Sequence[str]) -> bool:
    return not globs or any(fnmatch.fnmatchcase(name.casefold(), g.casefold()) for g in globs)


@dataclass(frozen=True)
class PlanInputs:
    """What the plan reads from the history (scanner/store), gathered by the caller."""

    run_id: int
    findings: list[FindingRow]
    observations: dict[str, ServerObservation]  # casefolded name -> the run's result
    latest: dict[str, tuple[int, ServerObservation]]  # casefolded name -> newest scan in the history
    pre_upgrade: dict[tuple[str, str], tuple[int, int, bytes, str, str]]  # (name, protocol) ->
    # (run before, run after, bytes before the build change, build before, build after)


def build_plan(inputs: PlanInputs, policy: Policy, created_at: datetime, *, rules: Sequence[str] = (),
               servers: Sequence[str] = ()) -> FixPlan:
    plan = FixPlan(created_at=created_at, run_id=inputs.run_id, policy_sha256=policy.sha256)
    wanted_rules = set(rules or PLAN_RULES) & set(PLAN_RULES)
    grouped: dict[tuple[str, str], list[FindingRow]] = {}
    for f in inputs.findings:
        if f.rule in wanted_rules and f.state in _ACTIVE_STATES and f.server_name and f.protocol \
                and _wanted(f.server_name, servers):
            grouped.setdefault((f.server_name, f.protocol), []).append(f)
    per_server: dict[str, list[ScriptChange]] = {}
    for (name, protocol), found in sorted(grouped.items(), key=lambda kv: (kv[0][0].casefold(), kv[0][1])):
        rules_here = sorted({f.rule for f in found})
        outcome = _one(inputs, policy, name, protocol, rules_here)
        if "reason" in outcome:
            (plan.unchanged if outcome.pop("unchanged", False) else plan.refused).append(outcome)
            continue
        script_change = outcome.pop("_script")
        plan.changes.append(outcome)
        per_server.setdefault(name, []).append(script_change)
    taken: set[str] = set()
    for name, changes in per_server.items():
        stem = safe_file_stem(name)
        base, n = stem, 2
        while stem.casefold() in taken or f"{stem}-rollback".casefold() in taken:
            stem, n = f"{base}-{n}", n + 1
        taken.update({stem.casefold(), f"{stem}-rollback".casefold()})
        obs = inputs.observations[name.casefold()]
        for kind, suffix in (("apply", ""), ("rollback", "-rollback")):
            data = ScriptData(kind=kind, server=obs.name, run_id=inputs.run_id,  # type: ignore[arg-type]
                              created_at=iso_utc(created_at), changes=tuple(changes))
            plan.script_texts[f"{stem}{suffix}.ps1"] = render_script(data)
        plan.scripts[name] = {"apply": f"{stem}.ps1", "rollback": f"{stem}-rollback.ps1"}
    for change in plan.changes:
        change["script"] = plan.scripts[change["server"]]["apply"]
    return plan


def _one(inputs: PlanInputs, policy: Policy, name: str, protocol: str, rules: list[str]) -> dict[str, Any]:
    """One (server, protocol): a change (with "_script"), or a refusal/no-change ("reason")."""
    head: dict[str, Any] = {"server": name, "protocol": protocol, "rules": rules}
    obs = inputs.observations.get(name.casefold())
    if obs is None or obs.scan_status != "ok":
        why = clean_text(obs.error or obs.scan_status) if obs is not None else "no result"
        return {**head, "reason": f"the server's scan in run {inputs.run_id} failed ({why}); scan it again first"}
    latest = inputs.latest.get(name.casefold())
    if latest is not None and latest[1].scan_status != "ok":
        return {**head, "reason": (f"the server's latest scan (run {latest[0]}) failed "
                                   f"({clean_text(latest[1].error or latest[1].scan_status)}); scan it again first")}
    p = obs.protocols.get(protocol)
    if p is None:
        return {**head, "reason": f"run {inputs.run_id} holds no {protocol} result for this server"}
    if latest is not None and latest[0] != inputs.run_id:
        newer = latest[1].protocols.get(protocol)
        if newer is None or newer.config_sha256 != p.config_sha256:
            return {**head, "reason": (f"the file changed since run {inputs.run_id}: the latest scan (run {latest[0]}) "
                                       "saw other bytes; plan from the latest run")}
    head["config_path"] = clean_text(p.config_path)
    if any(ord(ch) < 0x20 or ch in "\ufffe\uffff" for ch in p.config_path):
        return {**head, "reason": "the file's path holds control characters, which no Windows path has"}
    baseline = policy.baseline(obs.name, obs.site, protocol).allow_cross_site
    edit_rules = [r for r in rules if r in ("XS-001", "XS-002", "XS-003")]
    restart = "XS-005" in rules
    content = p.config_bytes
    if content is None or p.config_sha256 is None or hashlib.sha256(content).hexdigest() != p.config_sha256:
        return {**head, "reason": "the file's bytes as scanned are not in the history"}
    target = baseline
    if edit_rules == ["XS-003"] and p.allow_cross_site == baseline:
        edit_rules = []  # reset, but to the baseline's value: nothing to edit
    if not edit_rules and not restart:
        return {**head, "unchanged": True,
                "reason": "the value the upgrade reset agrees with the baseline; nothing to change"}
    sha = p.config_sha256
    change: dict[str, Any] = {**head, "before_sha256": sha, "after_sha256": sha, "before_value": p.allow_cross_site,
                              "after_value": p.allow_cross_site, "restart": True, "diff": "", "kind": "restart"}
    script = ScriptChange(protocol, p.config_path, "", "", None, restart=True)
    if edit_rules:
        try:
            edit = minimal_edit(content, target, references=_references(p), config_path=p.config_path)
        except EditRefused as refused:
            return {**head, "reason": clean_text(str(refused))}
        if not edit.changed:
            if not restart:
                return {**head, "unchanged": True,
                        "reason": f"the file already reads as the baseline's value ({str(target).lower()})"}
        else:
            change.update(after_sha256=edit.after_sha256, after_value=target, kind="edit",
                          diff=unified_diff(content, edit.after, p.config_path), edit=clean_text(edit.what))
            script = ScriptChange(protocol, p.config_path, sha, edit.after_sha256, edit.after, restart=True)
    context = inputs.pre_upgrade.get((name.casefold(), protocol))
    if context is not None:
        run_before, run_after, old, build_before, build_after = context
        change["pre_upgrade_diff"] = {
            "run_before": run_before, "run_after": run_after, "build_before": clean_text(build_before),
            "build_after": clean_text(build_after), "sha256": hashlib.sha256(old).hexdigest(),
            "diff": unified_diff(old, content, p.config_path, "before the upgrade", "scanned"),
        }
    change["_script"] = script
    return change


def write_plan(plan: FixPlan, out: Path) -> list[Path]:
    """Write plan.json and the scripts into `out` (created; refused when it already holds
    a plan.json: a reviewed plan is never overwritten)."""
    from scanner.util.safefile import write_file

    written = []
    target = out / "plan.json"
    text = json.dumps(plan.document(), indent=2, ensure_ascii=True) + "\n"
    write_file(target, text.encode("ascii"))
    written.append(target)
    for name, script in sorted(plan.script_texts.items()):
        path = out / name
        # UTF-8 with a BOM: PowerShell 1.0 reads a .ps1 without one in the ANSI code page
        write_file(path, b"\xef\xbb\xbf" + script.encode("utf-8"))
        written.append(path)
    return written


def gather(store: Any, run_id: int) -> PlanInputs:
    """Read what the plan needs from the history: the run's findings and results, each
    planned server's newest scan, and the file from before its latest build change."""
    findings = store.findings(run_id)
    observations = {obs.name.casefold(): obs for obs in store.server_observations(run_id)}
    latest: dict[str, tuple[int, ServerObservation]] = {}
    pre: dict[tuple[str, str], tuple[int, int, bytes, str, str]] = {}
    names = sorted({f.server_name for f in findings if f.server_name and f.rule in PLAN_RULES}, key=str.casefold)
    for name in names:
        history = store.history(name)
        if history:
            latest[name.casefold()] = history[-1]
        ok = [(rid, obs) for rid, obs in history if obs.scan_status == "ok" and rid <= run_id]
        for protocol in ("pop3", "imap4"):
            for (r0, a), (r1, b) in reversed(list(zip(ok, ok[1:], strict=False))):
                if a.build and b.build and a.build != b.build:
                    old = a.protocols.get(protocol)
                    if old is not None and old.config_bytes is not None:
                        pre[(name.casefold(), protocol)] = (r0, r1, old.config_bytes, a.build, b.build)
                    break
    return PlanInputs(run_id=run_id, findings=findings, observations=observations, latest=latest, pre_upgrade=pre)
