"""A real MIT Kerberos KDC on loopback for the tests (Debian's krb5-kdc, krb5-admin-server,
krb5-user), in a private folder with its own krb5.conf and kdc.conf.

`Realm.create()` writes the two files (KRB5_CONFIG, KRB5_KDC_PROFILE name them; nothing
under /etc is read), creates the database with kdb5_util, and `start()` runs krb5kdc in the
foreground on a free TCP/UDP port of 127.0.0.1. Principals and keytabs come from
kadmin.local. `hosts_entries()` makes the lab's FQDNs resolve (see its text).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")
HOSTS_FILE = Path("/etc/hosts")
HOSTS_MARK = "# cas-audit kerberos tests pid="


def find_tool(name: str) -> str | None:
    """A Kerberos program on PATH or in the sbin folders (not on a normal user's PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_tools() -> list[str]:
    return [name for name in TOOLS if find_tool(name) is None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Realm:
    """One realm served by one krb5kdc process."""

    def __init__(self, folder: Path, name: str, domain: str, *, max_life: str = "10h") -> None:
        self.folder = folder
        self.name = name
        self.domain = domain      # DNS domain of the lab hosts, mapped to this realm
        self.port = free_port()
        self.krb5_conf = folder / "krb5.conf"
        self.kdc_conf = folder / "kdc.conf"
        self.keytab = folder / "http.keytab"
        self.max_life = max_life
        self._kdc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use this realm (and nothing of /etc/krb5.conf)."""
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5_KDC_PROFILE": str(self.kdc_conf)}

    def create(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"  default_realm = {self.name}\n"
            "  dns_lookup_realm = false\n"
            "  dns_lookup_kdc = false\n"
            "  rdns = false\n"
            "  dns_canonicalize_hostname = false\n"
            "  udp_preference_limit = 1\n"
            "[realms]\n"
            f"  {self.name} = {{\n    kdc = 127.0.0.1:{self.port}\n  }}\n"
            "[domain_realm]\n"
            f"  .{self.domain} = {self.name}\n",
            encoding="utf-8")
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f"  kdc_ports = {self.port}\n"
            f"  kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            f"  kdc_listen = 127.0.0.1:{self.port}\n"
            "[realms]\n"
            f"  {self.name} = {{\n"
            f"    database_name = {self.folder / 'principal'}\n"
            f"    key_stash_file = {self.folder / 'stash'}\n"
            f"    acl_file = {self.folder / 'kadm5.acl'}\n"
            f"    max_life = {self.max_life}\n"
            "    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
            "  }\n"
            "[logging]\n"
            f"  kdc = FILE:{self.folder / 'kdc.log'}\n",
            encoding="utf-8")
        self._run("kdb5_util", "create", "-s", "-r", self.name, "-P", "kdc-master-key")

    def _run(self, tool: str, *args: str, stdin: str | None = None) -> str:
        path = find_tool(tool)
        assert path is not None, f"{tool} not installed"
        done = subprocess.run([path, *args], input=stdin, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **self.env})
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def kadmin(self, query: str) -> str:
        return self._run("kadmin.local", "-r", self.name, "-q", query)

    def add_user(self, name: str, password: str) -> str:
        self.kadmin(f"addprinc -pw {password} {name}")
        return f"{name}@{self.name}"

    def add_service(self, fqdn: str) -> str:
        """HTTP/<fqdn> with a random key, written to the realm's keytab (the lab's)."""
        principal = f"HTTP/{fqdn}"
        self.kadmin(f"addprinc -randkey {principal}")
        self.kadmin(f"ktadd -k {self.keytab} {principal}")
        return f"{principal}@{self.name}"

    def kinit(self, principal: str, password: str, ccache: Path, *, lifetime: str | None = None) -> None:
        """A ticket in `ccache`, as an administrator's `kinit` gets one (password on stdin)."""
        args = ["-c", f"FILE:{ccache}"] + (["-l", lifetime] if lifetime else []) + [principal]
        self._run("kinit", *args, stdin=password + "\n")

    def start(self) -> None:
        path = find_tool("krb5kdc")
        assert path is not None
        self._kdc = subprocess.Popen([path, "-n", "-r", self.name, "-P", str(self.folder / "kdc.pid")],
                                     env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._kdc.poll() is not None:
                err = self._kdc.stderr.read().decode(errors="replace") if self._kdc.stderr else ""
                raise RuntimeError(f"krb5kdc exited with {self._kdc.returncode}: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"krb5kdc did not listen on 127.0.0.1:{self.port} within 30 s")

    def stop(self) -> None:
        kdc, self._kdc = self._kdc, None
        if kdc is not None and kdc.poll() is None:
            kdc.terminate()
            try:
                kdc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kdc.kill()
                kdc.wait()
        if kdc is not None and kdc.stderr is not None:
            kdc.stderr.close()


def resolves_to(name: str, address: str) -> bool:
    try:
        return any(info[4][0] == address for info in socket.getaddrinfo(name, None, socket.AF_INET))
    except OSError:
        return False


@contextmanager
def hosts_entries(entries: dict[str, str]) -> Iterator[None]:
    """Make each FQDN of `entries` (name -> loopback address) resolve, for Kerberos.

    Kerberos names the server by host name (its service principal HTTP/<fqdn>), and the
    scanner connects to that same name, as it would to a real CAS: no test-only override in
    the scanner. So the names must resolve through the system resolver. Names that already
    resolve to their address (a developer's /etc/hosts) are used as they are; otherwise, when
    running as root (CI), lines are appended to /etc/hosts, each marked with this process id
    and removed again at the end (under a lock: several test sessions may share the machine;
    lines of sessions whose process is gone are removed too). Without root and without the
    names, the caller skips (see tests/test_kerberos.py for the lines to add).
    """
    needed = {name: addr for name, addr in entries.items() if not resolves_to(name, addr)}
    if not needed:
        yield
        return
    mark = f"{HOSTS_MARK}{os.getpid()}"
    _edit_hosts(lambda lines: lines + [f"{addr} {name} {mark}\n" for name, addr in needed.items()])
    try:
        yield
    finally:
        _edit_hosts(lambda lines: lines)


def _edit_hosts(change: Callable[[list[str]], list[str]]) -> None:
    with open("/etc/.hosts.cas-audit.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = HOSTS_FILE.read_text(encoding="utf-8").splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        kept = [line for line in lines if not _ours_or_stale(line)]
        new = change(kept)
        # write in place: /etc/hosts may be a bind mount (containers) that a rename would not reach
        with open(HOSTS_FILE, "w", encoding="utf-8") as out:
            out.writelines(new)


def _ours_or_stale(line: str) -> bool:
    at = line.find(HOSTS_MARK)
    if at < 0:
        return False
    pid = line[at + len(HOSTS_MARK):].strip()
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

