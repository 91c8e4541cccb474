"""The per-server fix scripts of `cas-audit fix plan` and their interface, shared by
`fix plan` (writes them), `fix apply`/`fix rollback` (run them over the scanner's WinRM
launch) and the lab (simulates them): docs/remediation.md.

A script is scanner/collect/fix.ps1 (Windows PowerShell 1.0) with its data block filled
in: one <fixData> document in a single-quoted here-string, listing the changes (path,
SHA-256 before and after, new content in base64, service, restart). The same template is
the apply script and its rollback twin (`kind`). Every value from a server is written as
XML-escaped text, and `%` as a character reference: a shipped script holds no `%` (it
travels in a shell environment variable; tests/pslint.py).

Interface (the same by hand and over WinRM):
- by hand: `.\\CAS01.ps1 [-Apply] [-Restart] [-Ticket ID]`;
- launched by the bootstrap (which passes no arguments): the environment variables
  APPLY_ENV_VAR="1", RESTART_ENV_VAR="1", TICKET_ENV_VAR=ID (`script_environment`).
Output: one <fixResult> document (fixresult.xsd), then RESULT_END_MARKER; exit 0 when every
change is ready or done, else 1 (`read_result`).
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import re
from dataclasses import dataclass
from typing import Literal

from lxml import etree

from scanner.collect import (
    ENV_VALUE_LIMIT,
    FIX_APPLY_ENV_VAR,
    FIX_RESTART_ENV_VAR,
    FIX_TICKET_ENV_VAR,
    SCRIPT_ENV_VAR,
    script_length,
    strip_script,
)
from scanner.util.xmlsafe import UntrustedXMLError, hardened_parser, parse_untrusted

__all__ = [
    "APPLY_ENV_VAR",
    "RESTART_ENV_VAR",
    "RESULT_END_MARKER",
    "TICKET_ENV_VAR",
    "ChangeResult",
    "FixResult",
    "ScriptChange",
    "ScriptData",
    "render_script",
    "read_result",
    "read_script_data",
    "safe_file_stem",
    "script_environment",
    "sendable_script",
    "valid_ticket",
]

APPLY_ENV_VAR = FIX_APPLY_ENV_VAR
RESTART_ENV_VAR = FIX_RESTART_ENV_VAR
TICKET_ENV_VAR = FIX_TICKET_ENV_VAR
RESULT_END_MARKER = "##CASAUDIT-FIX-END##"
RESULT_NAMESPACE = "urn:cas-audit:fix-result:1"
#: What the script accepts as a ticket (it names the backup file): the same rule both sides.
TICKET_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SERVICES = {"pop3": "MSExchangePOP3", "imap4": "MSExchangeIMAP4"}
_DATA_START = "$data = [xml]@'\n"
_DATA_END = "\n'@\n"
_TEMPLATE_DATA = re.compile(r"\$data = \[xml\]@'\n.*?\n'@\n", re.S)
_MAX_RESULT_BYTES = 1 << 20

ScriptKind = Literal["apply", "rollback"]
ChangeStatus = Literal["ready", "done", "already", "nothing", "changed", "missing", "no-backup", "refused",
                       "failed", "error"]
#: Statuses that count as success (the script exits 0 when every change has one).
OK_STATUSES = frozenset({"ready", "done", "already", "nothing"})


@dataclass(frozen=True)
class ScriptChange:
    """One change a script makes: a file edit (before/after/content), or a restart only
    (before == after == "", content None)."""

    protocol: str  # "pop3" | "imap4"
    path: str  # the config file's full path on the server (config_path of the scan)
    before_sha256: str  # "" for a restart only
    after_sha256: str
    content: bytes | None  # the new file's bytes; None for a restart only
    restart: bool = True

    @property
    def service(self) -> str:
        return SERVICES[self.protocol]


@dataclass(frozen=True)
class ScriptData:
    kind: ScriptKind
    server: str
    run_id: int | None
    created_at: str
    changes: tuple[ScriptChange, ...]


def valid_ticket(ticket: str) -> bool:
    return TICKET_PATTERN.fullmatch(ticket) is not None


_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9]|CONIN\$|CONOUT\$)", re.I)


def safe_file_stem(server: str) -> str:
    """A file name stem for a (hostile) server name: letters, digits, '.', '-', '_' kept,
    everything else '_'; no leading dot, no Windows reserved device name, at most 64."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", server)[:64].strip(". ") or "server"
    if stem.startswith("."):
        stem = "_" + stem[1:]
    if _RESERVED.fullmatch(stem.split(".")[0]):
        stem = "_" + stem
    return stem


def _attr(value: str) -> str:
    """An XML attribute value for the data document: escaped, '%' as a character reference,
    line breaks as character references (no line of the here-string starts with "'@")."""
    out = (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
           .replace("%", "&#37;").replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#9;"))
    if any(ord(ch) < 0x20 or ch in "\ufffe\uffff" for ch in out):
        raise ValueError("a value holds a control character that XML 1.0 cannot carry")
    return out


def _label(value: str) -> str:
    """A name shown, not used (server, time): characters XML cannot carry become '?'."""
    return _attr("".join("?" if (ord(ch) < 0x20 and ch not in "\t\r\n") or ch in "\ufffe\uffff" else ch
                         for ch in value))


def _data_document(data: ScriptData) -> str:
    run = "" if data.run_id is None else str(data.run_id)
    lines = [f'<fixData kind="{data.kind}" server="{_label(data.server)}" run="{run}" created="{_label(data.created_at)}">']
    for c in data.changes:
        if c.protocol not in SERVICES:
            raise ValueError(f"unknown protocol {c.protocol!r}")
        head = (f'<change protocol="{c.protocol}" service="{c.service}" restart="{"true" if c.restart else "false"}" '
                f'path="{_attr(c.path)}" before="{c.before_sha256}" after="{c.after_sha256}"')
        if c.content is None or data.kind == "rollback":
            lines.append(head + "/>")
        else:
            lines.append(head + ">")
            lines.append("<content>" + base64.b64encode(c.content).decode("ascii") + "</content>")
            lines.append("</change>")
    lines.append("</fixData>")
    return "\n".join(lines)


@functools.cache
def _template() -> str:
    return importlib.resources.files(__package__).joinpath("fix.ps1").read_text(encoding="utf-8")


def _comment(text: str) -> str:
    """Untrusted text made safe for a comment line: printable, no '%', one line."""
    return "".join(ch if ch.isprintable() and ch != "%" else "?" for ch in text)[:200]


def render_script(data: ScriptData) -> str:
    """The script for one server (CRLF line ends, as Notepad on the server expects). The
    header comment names what it changes; the data block carries it."""
    for c in data.changes:
        if c.content is not None and len(c.before_sha256) != 64:
            raise ValueError("a file edit needs its before hash")
    header = [f"# cas-audit fix plan, {data.kind} script for server {_comment(data.server)}"
              f" (run {data.run_id}, plan created {_comment(data.created_at)})"]
    for c in data.changes:
        what = "restart only" if c.content is None else f"SHA-256 {c.before_sha256[:12]}... -> {c.after_sha256[:12]}..."
        header.append(f"#   {c.protocol}: {_comment(c.path)} ({what})")
    body = _TEMPLATE_DATA.sub(lambda _m: _DATA_START + _data_document(data) + _DATA_END, _template(), count=1)
    text = "\n".join(header) + "\n#\n" + body
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def read_script_data(script: str) -> ScriptData:
    """The data block of a generated script, as the script itself reads it (the lab
    simulates a script from this; fix apply checks what it is about to send)."""
    text = script.replace("\r\n", "\n")
    start = text.find(_DATA_START)
    end = text.find(_DATA_END, start + 1)
    if start < 0 or end < 0:
        raise ValueError("no data block in the script")
    root = parse_untrusted(text[start + len(_DATA_START):end].encode("utf-8"))
    changes = []
    for el in root.findall("change"):
        content_el = el.find("content")
        content = base64.b64decode(content_el.text or "", validate=True) if content_el is not None else None
        changes.append(ScriptChange(
            protocol=el.get("protocol", ""), path=el.get("path", ""), before_sha256=el.get("before", ""),
            after_sha256=el.get("after", ""), content=content, restart=el.get("restart") == "true",
        ))
    kind = root.get("kind")
    if kind not in ("apply", "rollback"):
        raise ValueError(f"unknown script kind {kind!r}")
    run = root.get("run") or ""
    return ScriptData(kind=kind, server=root.get("server", ""), run_id=int(run) if run.isdigit() else None,
                      created_at=root.get("created", ""), changes=tuple(changes))


def sendable_script(script: str) -> str:
    """The script as sent over WinRM: comment and blank lines stripped (the data block has
    none: its lines start with '<', "$data" or "'@")."""
    return strip_script(script)


def script_environment(script: str, *, apply: bool, restart: bool, ticket: str) -> dict[str, str]:
    """The shell environment for launching `script` by the scanner's env bootstrap."""
    if ticket and not valid_ticket(ticket):
        raise ValueError("a ticket is letters, digits, '.', '-', '_' (at most 64, starting with a letter or digit)")
    if script_length(script) > ENV_VALUE_LIMIT:
        raise ValueError(f"the script is longer than the {ENV_VALUE_LIMIT}-character limit of an environment variable")
    if "%" in script:
        raise ValueError("a fix script may not hold a '%'")
    env = {SCRIPT_ENV_VAR: script, APPLY_ENV_VAR: "1" if apply else "0", RESTART_ENV_VAR: "1" if restart else "0"}
    if ticket:
        env[TICKET_ENV_VAR] = ticket
    return env


@dataclass(frozen=True)
class ChangeResult:
    protocol: str
    path: str
    status: ChangeStatus
    expected: str
    planned: str
    found: str
    now: str
    backup: str
    restart: str  # none | restarted | failed
    service: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES and self.restart != "failed"


@dataclass(frozen=True)
class FixResult:
    kind: ScriptKind
    mode: str  # check | apply
    server: str
    computer: str
    ticket: str
    time: str
    changes: tuple[ChangeResult, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.changes)


@functools.cache
def _schema() -> etree.XMLSchema:
    path = importlib.resources.files(__package__).joinpath("fixresult.xsd")
    return etree.XMLSchema(etree.fromstring(path.read_bytes(), hardened_parser()))


def read_result(stdout: bytes) -> FixResult:
    """The result document a fix script printed (before RESULT_END_MARKER), schema-checked.
    Raises UntrustedXMLError (reason in .reason) for anything else."""
    if len(stdout) > _MAX_RESULT_BYTES:
        raise UntrustedXMLError(f"the fix script's output is too large ({len(stdout)} bytes)")
    marker = stdout.rfind(RESULT_END_MARKER.encode("ascii"))
    if marker < 0:
        raise UntrustedXMLError("the fix script's output has no end marker (cut short)")
    root = parse_untrusted(stdout[:marker])
    schema = _schema()
    if not schema.validate(root):
        error = schema.error_log.last_error
        raise UntrustedXMLError(f"the fix script's output does not match fixresult.xsd: {error.message if error else ''}")
    ns = "{" + RESULT_NAMESPACE + "}"
    changes = tuple(
        ChangeResult(**{name: el.get(name, "") for name in (
            "protocol", "path", "status", "expected", "planned", "found", "now", "backup", "restart", "service",
            "message")})
        for el in root.iter(ns + "change")
    )
    return FixResult(kind=root.get("kind"), mode=root.get("mode", ""),
                     server=root.get("server", ""), computer=root.get("computer", ""),
                     ticket=root.get("ticket", ""), time=root.get("time", ""), changes=changes)
