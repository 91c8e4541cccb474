"""The fix scripts of `cas-audit fix plan` as a simulated CAS runs them (scanner/collect/fix.ps1).

The lab recognises a fix script as it recognises the collector: the script must be the
shipped template with a data block `fixscript.render_script` would write (anything else
is not run). It then does what fix.ps1 does on Windows, on the server's in-memory files:
hash check against the plan, the new file written beside the old one, its hash checked,
[System.IO.File]::Replace keeping the backup beside the file, the written hash checked,
and with -Restart, Restart-Service (the service's process starts at the lab clock's now).
Rollback restores the newest backup of the ticket with the scanned hash, only while the
file is still the one apply wrote.

Who may write: only the lab's admin account ([lab] admin_username); the scan account, and
everyone on a server with `writable = false`, gets .NET's UnauthorizedAccessException
("Access to the path '...' is denied."). Failure switches per server: `replace_fault`
("locked": Replace throws and leaves both files; "halfway": the replaced file is left under
the backup name, ERROR_UNABLE_TO_MOVE_REPLACEMENT_2), `write_fault` ("disk-full": the new
file's write stops halfway) and `restart_fails`. Sources and
unconfirmed points: docs/lab.md, "Fix scripts".
"""

from __future__ import annotations

import dataclasses
import hashlib
import ntpath
from collections.abc import Callable, Mapping
from datetime import datetime

from scanner.collect import strip_script
from scanner.collect.fixscript import (
    OK_STATUSES,
    RESULT_END_MARKER,
    RESULT_NAMESPACE,
    ScriptChange,
    ScriptData,
    read_script_data,
    render_script,
    valid_ticket,
)
from scanner.facts import PROTOCOLS
from scanner.lab.fleet_model import SimServer
from scanner.util.timefmt import compact_utc

__all__ = ["FixRun", "fix_script_data"]

#: Get-Service's DisplayName of the two services (Exchange 2007).
DISPLAY_NAMES = {"MSExchangePOP3": "Microsoft Exchange POP3", "MSExchangeIMAP4": "Microsoft Exchange IMAP4"}
#: ERROR_SHARING_VIOLATION as .NET's IOException says it (winerror 32).
SHARING_VIOLATION = "The process cannot access the file '{path}' because it is being used by another process."
#: ERROR_DISK_FULL (winerror 112), as FormatMessage says it.
DISK_FULL = "There is not enough space on the disk."
#: ERROR_UNABLE_TO_MOVE_REPLACEMENT_2 (winerror 1177), as FormatMessage says it.
MOVE_REPLACEMENT_2 = ("Unable to move the replacement file to the file to be replaced. The file to be "
                      "replaced has been renamed using the backup name.")


def fix_script_data(script: str) -> ScriptData | None:
    """The data of `script` (already stripped of comments) when it is exactly a fix script
    `fix plan` renders; None for anything else."""
    if "$data = [xml]@'" not in script:
        return None
    try:
        data = read_script_data(script)
        rendered = render_script(data)
    except ValueError:
        return None
    if strip_script(rendered).rstrip("\n") != script.replace("\r\n", "\n").rstrip("\n"):
        return None
    return data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _denied(path: str) -> str:
    # UnauthorizedAccessException: .NET resource UnauthorizedAccess_IODenied_Path.
    return f"Access to the path '{path}' is denied."


def _x(value: str) -> str:
    """X then T in fix.ps1: control characters to '?', SecurityElement.Escape."""
    text = "".join("?" if (ord(ch) < 0x20 and ch not in "\t\n\r") or ch in "\ufffe\uffff" else ch for ch in value)
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


class FixRun:
    """One run of a fix script on `server`; `result()` is its output, `server` afterwards
    the server with its files and services as the script left them."""

    def __init__(self, server: SimServer, data: ScriptData, env: dict[str, str], *, admin: bool,
                 now: Callable[[], datetime], config_paths: Mapping[str, str]) -> None:
        """`config_paths`: each protocol's config file path as collect.ps1 reports it (the
        plan's path), built by the host with Path.Combine's rules."""
        self.server, self.data, self._admin, self._now = server, data, admin, now
        self._paths = config_paths
        self.apply = env.get("CASAUDIT_FIX_APPLY") == "1"
        self.restart = env.get("CASAUDIT_FIX_RESTART") == "1"
        self.ticket = env.get("CASAUDIT_FIX_TICKET", "")
        self.stamp = compact_utc(now())
        self._files = self._folder()

    # -- the PopImap folder as a path -> bytes map ---------------------------------------

    def _config_path(self, protocol: str) -> str:
        return self._paths[protocol]

    def _folder(self) -> dict[str, tuple[str, bytes]]:
        files: dict[str, tuple[str, bytes]] = {}
        for protocol in PROTOCOLS:
            proto = self.server.protocols[protocol]
            if proto.config_bytes is not None:
                path = self._config_path(protocol)
                files[path.casefold()] = (path, proto.config_bytes)
        folder = ntpath.dirname(self._config_path(PROTOCOLS[0]))
        for name, data in self.server.extra_files.items():
            path = folder + "\\" + name
            files[path.casefold()] = (path, data)
        return files

    def _hash(self, path: str) -> str:
        entry = self._files.get(path.casefold())
        return _sha(entry[1]) if entry else ""

    def _write(self, path: str, data: bytes) -> str:
        """WriteAllBytes / Copy: '' or the exception's message."""
        if not (self._admin and self.server.writable):
            return _denied(path)
        if self.server.write_fault == "disk-full" and path.casefold().endswith(".new"):
            self._files[path.casefold()] = (path, data[: len(data) // 2])  # what was written before it failed
            return DISK_FULL
        self._files[path.casefold()] = (path, data)
        return ""

    def _commit(self) -> None:
        """Put the folder back into the server."""
        protocols = dict(self.server.protocols)
        written = self._now()
        for protocol in PROTOCOLS:
            entry = self._files.pop(self._config_path(protocol).casefold(), None)
            proto = protocols[protocol]
            data = entry[1] if entry else None
            if data != proto.config_bytes:
                protocols[protocol] = dataclasses.replace(proto, config_bytes=data, modified=written if data else None,
                                                          encoding="")
        extra = {ntpath.basename(path): data for path, data in self._files.values()}
        self.server = dataclasses.replace(self.server, protocols=protocols, extra_files=extra)
        self._files = self._folder()

    # -- fix.ps1's functions ---------------------------------------------------------------

    def _swap(self, r: dict[str, str], path: str, data: bytes, want: str, keep: str, tmp: str, bak: str) -> None:
        failed = self._write(tmp, data)
        if failed:
            self._files.pop(tmp.casefold(), None)  # Drop $tmp
            r["status"], r["message"] = "failed", "could not write the new file beside it, so nothing was changed: " + failed
            return
        fault = self.server.replace_fault
        if fault == "locked":
            self._files.pop(tmp.casefold(), None)  # Drop $tmp
            r["status"] = "failed"
            r["message"] = ("the file could not be replaced and is unchanged: "
                            + SHARING_VIOLATION.format(path=path))
            return
        old = self._files.pop(path.casefold())
        self._files[bak.casefold()] = (bak, old[1])
        if fault == "halfway":
            # the replaced file went to the backup name; the new one stayed beside it.
            # fix.ps1 finds the file missing, the backup with the old hash, and copies it back.
            self._files[path.casefold()] = (path, old[1])
            self._files.pop(tmp.casefold(), None)
            r["status"] = "failed"
            r["message"] = "the replace failed halfway; the file was copied back from the backup: " + MOVE_REPLACEMENT_2
            return
        self._files[path.casefold()] = (path, self._files.pop(tmp.casefold())[1])
        r["backup"] = bak
        r["now"] = self._hash(path)
        r["status"] = "done" if r["now"] == want else "failed"

    def _backup(self, path: str, want: str) -> str:
        prefix = (path + "." + self.ticket + "-").casefold()
        found = ""
        for key in sorted(k for k in self._files if k.startswith(prefix) and k.endswith(".bak")):
            name, data = self._files[key]
            if _sha(data) == want:
                found = name
        return found

    def _change(self, c: ScriptChange, r: dict[str, str]) -> None:
        kind = self.data.kind
        if c.before_sha256 == "":
            r["status"] = "nothing" if kind == "rollback" else "ready"
            return
        want, keep = (c.before_sha256, c.after_sha256) if kind == "rollback" else (c.after_sha256, c.before_sha256)
        r["found"] = r["now"] = self._hash(c.path)
        if r["found"] == "":
            r["status"], r["message"] = "missing", "the file does not exist"
            return
        if r["found"] == want:
            r["status"] = "already"
            return
        if r["found"] != keep:
            r["status"] = "changed"
            r["message"] = (f"the file changed since the plan: its SHA-256 is {r['found']}, not {keep}; "
                            "nothing was written")
            return
        if kind == "rollback":
            bak = self._backup(c.path, c.before_sha256)
            if bak == "":
                r["status"] = "no-backup"
                r["message"] = f"no backup of ticket {self.ticket} with the scanned hash beside the file"
                return
            r["backup"] = bak
            data = self._files[bak.casefold()][1]
        else:
            data = c.content or b""
        if _sha(data) != want:
            r["status"], r["message"] = "error", "the content to write does not have the planned hash"
            return
        if not self.apply:
            r["status"] = "ready"
            return
        base = f"{c.path}.{self.ticket}-{self.stamp}"
        tmp, bak = (base + "-rollback.new", base + "-rollback.bak") if kind == "rollback" else (base + ".new", base + ".bak")
        if tmp.casefold() in self._files or bak.casefold() in self._files:
            r["status"], r["message"] = "refused", f"a file named {bak} or {tmp} already exists"
            return
        s = {"status": "", "message": "", "backup": "", "now": ""}
        self._swap(s, c.path, data, want, keep, tmp, bak)
        r["status"], r["message"] = s["status"], s["message"]
        if kind == "apply":
            r["backup"] = s["backup"]
        r["now"] = self._hash(c.path)

    def _service(self, c: ScriptChange, r: dict[str, str]) -> None:
        proto = self.server.protocols[c.protocol]
        if proto.service == "absent":
            r["service"] = "unknown"  # Get-Service: "Cannot find any service with service name '...'."
            return
        r["service"] = proto.service
        if not (self.apply and self.restart) or not c.restart:
            return
        if r["status"] not in ("done", "already", "ready"):
            return
        name = c.service
        shown = f"{DISPLAY_NAMES.get(name, name)} ({name})"
        if not self._admin:  # UNCONFIRMED wording (docs/lab.md): the service control manager refuses
            error = f"Service '{shown}' cannot be stopped due to the following error: Cannot open {name} service on computer '.'."
        elif self.server.restart_fails:  # UNCONFIRMED wording (docs/lab.md)
            error = f"Service '{shown}' cannot be started due to the following error: Cannot start service {name} on computer '.'."
        else:
            error = ""
        if error:
            r["restart"] = "failed"
            r["message"] = (r["message"] + " The restart failed: " + error).strip()
            if self._admin:  # stopped, then not started again
                protocols = dict(self.server.protocols)
                protocols[c.protocol] = dataclasses.replace(proto, service="Stopped")
                self.server = dataclasses.replace(self.server, protocols=protocols)
                r["service"] = "Stopped"
            return
        protocols = dict(self.server.protocols)
        protocols[c.protocol] = dataclasses.replace(proto, service="Running", started=self._now())
        self.server = dataclasses.replace(self.server, protocols=protocols)
        r["restart"], r["service"] = "restarted", "Running"

    def result(self) -> tuple[str, int]:
        """Run the script: its stdout text and exit code."""
        data = self.data
        mode = "apply" if self.apply else "check"
        lines = ['<?xml version="1.0" encoding="utf-8"?>',
                 f'<fixResult xmlns="{RESULT_NAMESPACE}" kind="{data.kind}" mode="{mode}" server="{_x(data.server)}" '
                 f'computer="{_x(self.server.computer or self.server.name)}" ticket="{_x(self.ticket)}" time="{self.stamp}">']
        bad = 0
        ticket_ok = valid_ticket(self.ticket)
        for c in data.changes:
            r = {"status": "", "message": "", "found": "", "now": "", "backup": "", "restart": "none", "service": ""}
            if (self.apply or data.kind == "rollback") and not ticket_ok:
                r["status"] = "refused"
                r["message"] = "a ticket (letters, digits, dot, dash, underscore; at most 64) is needed"
            else:
                self._change(c, r)
                self._commit()
                self._service(c, r)
            if r["status"] not in OK_STATUSES or r["restart"] == "failed":
                bad = 1
            attrs = {"protocol": c.protocol, "path": c.path, "status": r["status"], "expected": c.before_sha256,
                     "planned": c.after_sha256, "found": r["found"], "now": r["now"], "backup": r["backup"],
                     "restart": r["restart"], "service": r["service"], "message": r["message"]}
            lines.append("<change" + "".join(f' {k}="{_x(v)}"' for k, v in attrs.items()) + "/>")
        lines.append("</fixResult>")
        lines.append(RESULT_END_MARKER)
        return "\n".join(lines) + "\n", bad
