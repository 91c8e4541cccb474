"""The lab's process-wide logon material: the NTLM user file pyspnego's acceptor reads
(NTLM_USER_FILE) and the Kerberos keytab (KRB5_KTNAME). Both are environment variables of
the process, so every LabServer of a process shares them (scanner/lab/httpserver.py).
"""

from __future__ import annotations

import atexit
import hmac
import os
import shutil
import tempfile
import threading

from scanner.errors import ConfigError

# -- the process-wide NTLM user file -----------------------------------------------------

_ntlm_lock = threading.Lock()
_ntlm_users: dict[tuple[str, str], tuple[str, str, str]] = {}
_ntlm_dir: str | None = None


def register_ntlm_user(domain: str, username: str, password: str) -> str:
    """Add a user to this process's NTLM_USER_FILE (created on first use); returns its path.

    A user with a domain is also registered without one, so that both `DOMAIN\\user` and
    `user` log on, as on Windows.
    """
    global _ntlm_dir
    for value in (domain, username, password):
        if ":" in value or "\n" in value or "\r" in value:
            raise ConfigError("NTLM lab users cannot contain ':' or line breaks in domain, user or password")
    if not username:
        raise ConfigError("an NTLM lab host needs a username")
    with _ntlm_lock:
        entries = [(domain, username)] + ([("", username)] if domain else [])
        for dom, user in entries:
            key = (dom.upper(), user.upper())
            known = _ntlm_users.get(key)
            if known is not None and not hmac.compare_digest(known[2], password):
                shown = f"{dom}\\{user}" if dom else user
                raise ConfigError(f"NTLM lab user {shown} is already registered with another "
                                  "password in this process")
            _ntlm_users[key] = (dom, user, password)
        if _ntlm_dir is None:
            _ntlm_dir = tempfile.mkdtemp(prefix="cas-audit-lab-ntlm-")
            atexit.register(shutil.rmtree, _ntlm_dir, True)
        path = os.path.join(_ntlm_dir, "users")
        staging = path + ".new"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for dom, user, pw in _ntlm_users.values():
                out.write(f"{dom}:{user}:{pw}\n")
        os.replace(staging, path)
        os.environ["NTLM_USER_FILE"] = path
        return path


_keytab_lock = threading.Lock()
_keytab: str | None = None


def use_keytab(path: str) -> None:
    """Point this process's Kerberos acceptor at `path` (KRB5_KTNAME); one keytab per process."""
    global _keytab
    if not path:
        raise ConfigError("a Kerberos lab host needs a keytab", hint="set keytab in the fleet file's [lab] table")
    wanted = f"FILE:{os.path.abspath(path)}"
    with _keytab_lock:
        if _keytab is not None and _keytab != wanted:
            raise ConfigError(f"this process already serves Kerberos with keytab {_keytab}",
                              hint="every Kerberos lab host of one process must use the same keytab")
        _keytab = os.environ["KRB5_KTNAME"] = wanted
