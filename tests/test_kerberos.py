"""Kerberos end to end: a real MIT KDC on loopback (tests/kdc.py), the lab accepting Kerberos
through a keytab (pyspnego), and the real command line scanning with pywinrm's kerberos
transport, message encryption and FQDN addresses.

Where no KDC can run (krb5-kdc, krb5-admin-server, krb5-user or the `kerberos` extra missing,
or the lab's FQDNs neither resolve nor can be added to /etc/hosts without root), these tests
skip with the reason; in CI (CI=true) they fail instead. A developer without root adds once:
    127.0.12.1 cas01.krb.cas-audit.test
    127.0.12.2 cas02.krb.cas-audit.test
    127.0.13.1 cas03.krb.cas-audit.test
    127.0.146.1 cas04.krb.cas-audit.test
    127.0.147.1 cas05.krb.cas-audit.test
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
from kdc import Realm, find_tool, hosts_entries, missing_tools, resolves_to
from labfleet import invoke_here
from tlscert import write_self_signed

from scanner.lab.fleet import load_fleet
from scanner.lab.serve import Lab

pytestmark = [pytest.mark.kerberos, pytest.mark.slow]

REALM = "CAS-AUDIT.TEST"
DOMAIN = "krb.cas-audit.test"
USER = "auditor"
PASSWORD = "krb-Passw0rd"
OTHER_USER = "intruder"   # a valid principal of the realm, but not the lab's account
OPERATOR = "operator"     # a second account with a lab of its own (CAS04): the mixed inventory
OPERATOR_PASSWORD = "op-Passw0rd"
HOSTS = {f"cas01.{DOMAIN}": "127.0.12.1", f"cas02.{DOMAIN}": "127.0.12.2",
         f"cas03.{DOMAIN}": "127.0.13.1",   # CAS03: the lab with its clock moved (its own process)
         f"cas04.{DOMAIN}": "127.0.146.1",  # CAS04: the operator's lab
         f"cas05.{DOMAIN}": "127.0.147.1"}  # CAS05: https with CbtHardeningLevel Strict
FLEET = f"""
[lab]
username = "{USER}"
domain = "{REALM}"
auth = "kerberos"
keytab = "http.keytab"
base_address = "127.0.12.1"
port = 0

[[server]]
name = "CAS01"
site = "Berlin"
fqdn = "cas01.{DOMAIN}"

[[server]]
name = "CAS02"
site = "Hamburg"
fqdn = "cas02.{DOMAIN}"
"""
OPERATOR_FLEET = f"""
[lab]
username = "{OPERATOR}"
domain = "{REALM}"
auth = "kerberos"
keytab = "http.keytab"
base_address = "127.0.146.1"
port = 0

[[server]]
name = "CAS04"
site = "Berlin"
fqdn = "cas04.{DOMAIN}"
"""
HTTPS_STRICT_FLEET = f"""
[lab]
username = "{USER}"
domain = "{REALM}"
auth = "kerberos"
keytab = "http.keytab"
tls_cert = "cas05.pem"
tls_key = "cas05.key"
cbt_hardening = "strict"
base_address = "127.0.147.1"
port = 0

[[server]]
name = "CAS05"
site = "Berlin"
fqdn = "cas05.{DOMAIN}"
"""
SKEWED_FLEET = f"""
[lab]
username = "{USER}"
domain = "{REALM}"
auth = "kerberos"
keytab = "http.keytab"
base_address = "127.0.13.1"
port = 0

[[server]]
name = "CAS03"
site = "Berlin"
fqdn = "cas03.{DOMAIN}"
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Kerberos tests cannot run in CI: {reason} (.ci/run installs what they need)")
    pytest.skip(reason)


@dataclass
class KerberosLab:
    realm: Realm
    lab: Lab
    inventory: Path
    folder: Path

    def inventory_with(self, old: str, new: str, name: str) -> Path:
        path = self.folder / name
        path.write_text(self.inventory.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
        return path


@pytest.fixture(scope="session")
def krb_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KerberosLab]:
    """Once per session: the realm, its KDC, two lab CAS with HTTP/<fqdn> keys, the inventory."""
    missing = missing_tools()
    if missing:
        _unavailable(f"no MIT Kerberos KDC here: {', '.join(missing)} not found "
                     "(apt-get install krb5-kdc krb5-admin-server krb5-user)")
    try:
        import gssapi  # noqa: F401
        import kerberos  # noqa: F401
    except ImportError as exc:
        _unavailable(f"the kerberos extra is not installed ({exc.name}): pip install -e '.[kerberos]'")
    if os.geteuid() != 0 and not all(resolves_to(name, addr) for name, addr in HOSTS.items()):
        _unavailable("the lab's FQDNs do not resolve and /etc/hosts needs root: add "
                     + "; ".join(f"{addr} {name}" for name, addr in HOSTS.items()) + " to /etc/hosts")
    folder = tmp_path_factory.mktemp("kerberos")
    realm = Realm(folder / "realm", REALM, DOMAIN)
    realm.create()
    realm.add_user(USER, PASSWORD)
    realm.add_user(OTHER_USER, PASSWORD)
    realm.add_user(OPERATOR, OPERATOR_PASSWORD)
    for fqdn in HOSTS:
        realm.add_service(fqdn)
    (folder / "fleet.toml").write_text(FLEET, encoding="utf-8")
    (folder / "skewed.toml").write_text(SKEWED_FLEET, encoding="utf-8")
    (folder / "operator.toml").write_text(OPERATOR_FLEET, encoding="utf-8")
    (folder / "strict.toml").write_text(HTTPS_STRICT_FLEET, encoding="utf-8")
    write_self_signed(folder / "cas05.pem", folder / "cas05.key", f"cas05.{DOMAIN}")
    (folder / "http.keytab").write_bytes(realm.keytab.read_bytes())
    saved = {key: os.environ.get(key) for key in realm.env}
    os.environ.update(realm.env)   # the in-process lab's acceptor reads this krb5.conf
    realm.start()
    try:
        with ExitStack() as stack:
            try:
                stack.enter_context(hosts_entries(HOSTS))
            except OSError as exc:
                _unavailable(f"cannot add the lab's FQDNs to /etc/hosts ({exc.strerror or exc})")
            unresolved = [name for name, addr in HOSTS.items() if not resolves_to(name, addr)]
            if unresolved:
                _unavailable(f"{', '.join(unresolved)} do not resolve through /etc/hosts here")
            lab = stack.enter_context(Lab(load_fleet(folder / "fleet.toml")))
            inventory = folder / "inventory.toml"
            lab.write_inventory(inventory)
            yield KerberosLab(realm, lab, inventory, folder)
    finally:
        realm.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cas_audit(krb: KerberosLab, *args: str, ccache: Path, password: str | None = None,
              db: Path | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process with the realm's krb5.conf and `ccache`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAS_AUDIT_", "KRB5"))}
    env.update(_command_env(krb, ccache, password, db))
    return subprocess.run([*prefix, sys.executable, "-m", "scanner", *args], capture_output=True, text=True,
                          env=env, timeout=180, stdin=subprocess.DEVNULL)


def cas_audit_here(krb: KerberosLab, *args: str, ccache: Path, password: str | None = None,
                   db: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The same command in this process (CliRunner), with the same environment: for the
    tests about what a command does with a ticket, a password or a refused logon, not about
    the process (saves a child's imports, about 1.3 s of CPU a scan). KRB5_KTNAME stays: it
    is the in-process lab's acceptor keytab (scanner/lab/credentials.py), which the
    scanner, an initiator, never reads; without it the lab refused every good ticket. An
    exception the command did not turn into an exit code is raised, as a child's traceback
    would fail the test."""
    env: dict[str, str | None] = {k: None for k in os.environ
                                  if k.startswith(("CAS_AUDIT_", "KRB5")) and k != "KRB5_KTNAME"}
    env.update(_command_env(krb, ccache, password, db))
    return invoke_here(args, env)


def _command_env(krb: KerberosLab, ccache: Path, password: str | None, db: Path | None) -> dict[str, str]:
    """What a command of these tests runs with: the realm's krb5.conf, `ccache`, and the
    password and history when given."""
    env = {**krb.realm.env, "KRB5CCNAME": f"FILE:{ccache}"}
    if password is not None:
        env["CAS_AUDIT_PASSWORD"] = password
    if db is not None:
        env["CAS_AUDIT_DB"] = f"sqlite:///{db}"
    return env


def _report(db: Path) -> dict[str, object]:
    """The JSON report of what the scan (a child process) stored. Read in this process: the
    report needs no Kerberos, and a second interpreter per scan cost a second of CPU."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CAS_AUDIT_")}
    done = invoke_here(["report", "--db", f"sqlite:///{db}", "--format", "json"], unset)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _failures(db: Path) -> dict[str, str]:
    """Per server: the error the scan stored for it ("kind: sentence")."""
    data = _report(db)
    servers = data["servers"]
    assert isinstance(servers, list)
    return {s["name"]: str(s["error"]) for s in servers}


def _failed_scan(krb: KerberosLab, inventory: Path, tmp_path: Path, *, ccache: Path, password: str | None = None,
                 prefix: tuple[str, ...] = ()) -> dict[str, str]:
    """Scan `inventory`, expect exit code 3 and no traceback; per server the stored error.
    Under a `prefix` (faketime) in a child process, otherwise in this one."""
    db = tmp_path / "history.db"
    if prefix:
        scan = cas_audit(krb, "scan", "--inventory", str(inventory), ccache=ccache, password=password, db=db,
                         prefix=prefix)
    else:
        scan = cas_audit_here(krb, "scan", "--inventory", str(inventory), ccache=ccache, password=password, db=db)
    assert scan.returncode == 3, scan.stdout + scan.stderr
    assert "Traceback" not in scan.stderr
    return _failures(db)


def test_inventory_written_by_the_lab_names_fqdns_and_the_realm(krb_lab: KerberosLab) -> None:
    text = krb_lab.inventory.read_text(encoding="utf-8")
    assert 'auth = "kerberos"' in text
    assert f'username = "{USER}@{REALM}"' in text
    for fqdn in (f"cas01.{DOMAIN}", f"cas02.{DOMAIN}"):
        assert f'address = "{fqdn}"' in text
    assert PASSWORD not in text


def test_scan_with_a_kinit_ticket(krb_lab: KerberosLab, tmp_path: Path) -> None:
    ccache = tmp_path / "ccache"
    krb_lab.realm.kinit(f"{USER}@{REALM}", PASSWORD, ccache)
    before = {name: krb_lab.lab.stats(name).auth_failures for name in ("CAS01", "CAS02")}
    requests = {name: krb_lab.lab.stats(name).requests for name in ("CAS01", "CAS02")}
    db = tmp_path / "history.db"
    scan = cas_audit_here(krb_lab, "scan", "--inventory", str(krb_lab.inventory), ccache=ccache, db=db)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert "2 scanned, 0 failed" in scan.stderr or "failed" not in scan.stderr.lower(), scan.stderr
    data = _report(db)
    run = data["run"]
    assert isinstance(run, dict)
    assert (run["servers_planned"], run["servers_scanned"]) == (2, 2)
    # the lab answers unencrypted SOAP with 401 (AllowUnencrypted=false): none was needed
    assert {name: krb_lab.lab.stats(name).auth_failures for name in ("CAS01", "CAS02")} == before
    # one round trip authenticates (pywinrm sends the Kerberos token pre-emptively on an empty
    # POST and checks the server's mutual-authentication answer), then Create, Command, Receive, Delete
    assert {name: krb_lab.lab.stats(name).requests - requests[name] for name in ("CAS01", "CAS02")} == \
        {"CAS01": 5, "CAS02": 5}


def test_preflight_with_a_kinit_ticket_and_no_password(krb_lab: KerberosLab, tmp_path: Path) -> None:
    """Preflight of a Kerberos-only inventory asks for no password: kinit's ticket logs on
    (before: exit 2, "no password for auditor@...")."""
    ccache = tmp_path / "ccache"
    krb_lab.realm.kinit(f"{USER}@{REALM}", PASSWORD, ccache)
    # in this process, with keyring's own fail backend (what PYTHON_KEYRING_BACKEND would
    # choose in a fresh process): no password from anywhere; the previous backend put back after
    import keyring
    from keyring.backends.fail import Keyring as NoKeyring

    previous = keyring.get_keyring()
    keyring.set_keyring(NoKeyring())
    try:
        run = cas_audit_here(krb_lab, "preflight", "--inventory", str(krb_lab.inventory), "--format", "json",
                             ccache=ccache)
    finally:
        keyring.set_keyring(previous)
    assert run.returncode == 0, run.stdout + run.stderr
    servers = {s["name"]: s for s in json.loads(run.stdout)["servers"]}
    assert {name: (s["ready"], s["problems"]) for name, s in servers.items()} == {
        "CAS01": (True, []), "CAS02": (True, [])}


def test_scan_with_a_password_gets_its_own_ticket(krb_lab: KerberosLab, tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    empty = tmp_path / "no-ccache"       # no kinit: the password is the only way in
    scan = cas_audit_here(krb_lab, "scan", "--inventory", str(krb_lab.inventory), ccache=empty,
                     password=PASSWORD, db=db)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert PASSWORD not in scan.stdout + scan.stderr
    assert not empty.exists()            # the ticket went to a private cache, not the user's


def test_an_inventory_mixing_a_kinit_account_and_a_password_account_scans_completely(
        krb_lab: KerberosLab, tmp_path: Path) -> None:
    """auditor logs on with kinit's cache, operator with a password from the keyring (a real
    file keyring, keyrings.alt): the password account's private ticket cache is its own
    thread's business, so the kinit account, scanned after it, still finds kinit's ticket.
    (Before: the private cache was put into KRB5CCNAME for the whole process, and CAS01 and
    CAS02 failed with "there is no Kerberos ticket for auditor".)"""
    ccache = tmp_path / "ccache"
    krb_lab.realm.kinit(f"{USER}@{REALM}", PASSWORD, ccache)
    # In this process, through keyring's own set_keyring: a file keyring in the test's
    # XDG_DATA_HOME (as PYTHON_KEYRING_BACKEND would choose in a fresh process), put back after.
    import keyring
    from keyrings.alt.file import PlaintextKeyring

    previous = keyring.get_keyring()
    with pytest.MonkeyPatch.context() as env, Lab(load_fleet(krb_lab.folder / "operator.toml")) as operator_lab:
        env.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
        backend = PlaintextKeyring()
        backend.set_password("cas-audit", f"{OPERATOR}@{REALM}", OPERATOR_PASSWORD)
        assert (tmp_path / "data" / "python_keyring" / "keyring_pass.cfg").is_file()
        servers = [{"name": "CAS04", "address": f"cas04.{DOMAIN}", "site": "Berlin",
                    "port": operator_lab.port("CAS04"), "username": f"{OPERATOR}@{REALM}"}]
        servers += [{"name": name, "address": f"{name.lower()}.{DOMAIN}", "site": "Berlin",
                     "port": krb_lab.lab.port(name)} for name in ("CAS01", "CAS02")]
        inventory = tmp_path / "mixed.toml"
        inventory.write_text(tomli_w.dumps({"defaults": {"username": f"{USER}@{REALM}", "auth": "kerberos",
                                                         "scheme": "http"}, "server": servers}), encoding="utf-8")
        db = tmp_path / "history.db"
        keyring.set_keyring(backend)
        try:
            # one at a time, the password account first: every kinit collection comes after it
            scan = cas_audit_here(krb_lab, "scan", "--inventory", str(inventory), "--concurrency", "1",
                                  ccache=ccache, db=db)
        finally:
            keyring.set_keyring(previous)
        operator_requests = operator_lab.stats("CAS04").requests
    assert scan.returncode in (0, 1), scan.stdout + scan.stderr
    assert "3 scanned, 0 failed" in scan.stderr, scan.stderr
    assert OPERATOR_PASSWORD not in scan.stdout + scan.stderr
    # before: pywinrm's Kerberos warned raw on every logon over http (no certificate to bind)
    assert "Warning" not in scan.stderr, scan.stderr
    assert operator_requests == 5


def test_no_ticket_and_no_password_says_run_kinit(krb_lab: KerberosLab, tmp_path: Path) -> None:
    errors = _failed_scan(krb_lab, krb_lab.inventory, tmp_path, ccache=tmp_path / "none")
    for name in ("CAS01", "CAS02"):
        assert errors[name].startswith(f"auth: there is no Kerberos ticket for {USER}@{REALM}: "
                                       f"run `kinit {USER}@{REALM}`"), errors


def test_wrong_realm_is_one_sentence(krb_lab: KerberosLab, tmp_path: Path) -> None:
    inventory = krb_lab.inventory_with(f"{USER}@{REALM}", f"{USER}@WRONG.TEST", "wrong-realm.toml")
    errors = _failed_scan(krb_lab, inventory, tmp_path, ccache=tmp_path / "none", password=PASSWORD)
    expected = f"auth: the Kerberos realm of {USER}@WRONG.TEST (WRONG.TEST) is not one this machine knows"
    for name in ("CAS01", "CAS02"):
        assert errors[name].startswith(expected), errors


def test_expired_ticket_is_one_sentence(krb_lab: KerberosLab, tmp_path: Path) -> None:
    """A ticket the real KDC issued for 2 s, used a minute later: the scan runs under
    libfaketime (+1 minute, well inside the 5 minutes of allowed clock skew, so no skew
    error), and its own clock finds the ticket's end time, set by the KDC, passed."""
    faketime = find_tool("faketime")
    if faketime is None:
        _unavailable("libfaketime's faketime is not installed (apt-get install faketime)")
    ccache = tmp_path / "ccache"
    krb_lab.realm.kinit(f"{USER}@{REALM}", PASSWORD, ccache, lifetime="2s")
    errors = _failed_scan(krb_lab, krb_lab.inventory, tmp_path, ccache=ccache, prefix=(str(faketime), "-f", "+1m"))
    for name in ("CAS01", "CAS02"):
        assert errors[name].startswith(f"auth: the Kerberos ticket of {USER}@{REALM} has expired: run `kinit"), errors


def test_clock_skew_is_one_sentence(krb_lab: KerberosLab, tmp_path: Path) -> None:
    """This machine's clock an hour ahead of the KDC's. The ticket is taken at the true time
    (MIT's kinit would otherwise correct its own skew against the KDC, kdc_timesync); the scan
    then runs under libfaketime (+1 hour), and the real KDC refuses its service-ticket request
    with KRB_AP_ERR_SKEW. (The CAS's own clock: test_server_clock_skew_is_one_sentence.)"""
    faketime = find_tool("faketime")
    if faketime is None:
        _unavailable("libfaketime's faketime is not installed (apt-get install faketime)")
    ccache = tmp_path / "ccache"
    krb_lab.realm.kinit(f"{USER}@{REALM}", PASSWORD, ccache)
    errors = _failed_scan(krb_lab, krb_lab.inventory, tmp_path, ccache=ccache, prefix=(str(faketime), "-f", "+1h"))
    for name in ("CAS01", "CAS02"):
        assert errors[name].startswith("auth: Kerberos refused the logon because this machine's clock and the "
                                       "domain's differ"), errors


@contextmanager
def _lab_in_own_process(krb: KerberosLab, prefix: tuple[str, ...], inventory: Path) -> Iterator[None]:
    """`cas-audit lab serve` of the skewed fleet in a child process (under `prefix`). The
    prefix (faketime) forks the lab and waits for it, so the lab runs in a process group of
    its own and the whole group is ended: ending the wrapper alone left the lab running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAS_AUDIT_", "KRB5"))}
    env.update(krb.realm.env)
    lab = subprocess.Popen([*prefix, sys.executable, "-m", "scanner", "lab", "serve", str(krb.folder / "skewed.toml"),
                            "--inventory-out", str(inventory)], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert lab.stdout is not None
        said, deadline = b"", time.monotonic() + 60
        while b"\ninventory: " not in b"\n" + said:   # printed once the inventory is written
            left = deadline - time.monotonic()
            assert left > 0, "lab serve wrote no inventory within 60 s"
            if select.select([lab.stdout], [], [], left)[0]:
                chunk = os.read(lab.stdout.fileno(), 4096)
                if not chunk:
                    lab.wait()
                    pytest.fail(f"lab serve ended: {lab.stderr.read() if lab.stderr else ''}")
                said += chunk
        yield
    finally:
        os.killpg(lab.pid, signal.SIGTERM)   # the group's id is the wrapper's pid (start_new_session)
        try:
            lab.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait()
        for pipe in (lab.stdout, lab.stderr):
            if pipe is not None:
                pipe.close()


def test_server_clock_skew_is_one_sentence(krb_lab: KerberosLab, tmp_path: Path) -> None:
    """The CAS's clock an hour ahead: the lab runs under libfaketime, so pyspnego's (MIT's)
    acceptor really refuses the authenticator as skewed. The answer is a bare 401, as the lab
    gives for every refused logon (what Windows puts in its 401 then is unconfirmed), so the
    sentence names the clock as one of two causes."""
    faketime = find_tool("faketime")
    if faketime is None:
        _unavailable("libfaketime's faketime is not installed (apt-get install faketime)")
    ccache = tmp_path / "ccache"
    krb_lab.realm.kinit(f"{USER}@{REALM}", PASSWORD, ccache)
    inventory = tmp_path / "skewed-inventory.toml"
    with _lab_in_own_process(krb_lab, (str(faketime), "-f", "+1h"), inventory):
        error = _failed_scan(krb_lab, inventory, tmp_path, ccache=ccache)["CAS03"]
    assert error.startswith(f"auth: cas03.{DOMAIN} refused the Kerberos ticket of {USER}@{REALM}: its clock may "
                            "differ from the domain's"), error


def test_the_lab_lets_in_only_its_own_account(krb_lab: KerberosLab, tmp_path: Path) -> None:
    """A ticket the KDC really issued, for another user of the realm: the lab refuses it."""
    inventory = krb_lab.inventory_with(f"{USER}@{REALM}", f"{OTHER_USER}@{REALM}", "other-user.toml")
    errors = _failed_scan(krb_lab, inventory, tmp_path, ccache=tmp_path / "none", password=PASSWORD)
    assert errors["CAS01"].startswith(f"auth: cas01.{DOMAIN} refused the Kerberos ticket of {OTHER_USER}@{REALM}")


def test_the_lab_refuses_kerberos_without_message_encryption(krb_lab: KerberosLab, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """pywinrm told not to encrypt: the lab answers like WinRM with AllowUnencrypted=false."""
    from winrm.exceptions import InvalidCredentialsError
    from winrm.protocol import Protocol

    ccache = tmp_path / "ccache"
    krb_lab.realm.kinit(f"{USER}@{REALM}", PASSWORD, ccache)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{ccache}")
    endpoint = krb_lab.lab.servers["CAS01"].endpoint.replace("127.0.12.1", f"cas01.{DOMAIN}")
    protocol = Protocol(endpoint=endpoint, transport="kerberos", username=f"{USER}@{REALM}",
                        message_encryption="never", operation_timeout_sec=5, read_timeout_sec=10,
                        ca_trust_path=None)
    with pytest.raises(InvalidCredentialsError):
        protocol.open_shell()


def test_discover_from_a_management_host_with_a_delegated_ticket(krb_lab: KerberosLab, tmp_path: Path) -> None:
    """`inventory discover --from` only with what makes Get-ExchangeServer's second hop work:
    Kerberos with delegation (a forwardable ticket, `kinit -f`; pywinrm's kerberos_delegation)."""
    ccache = tmp_path / "ccache"
    krb_lab.realm._run("kinit", "-f", "-c", f"FILE:{ccache}", f"{USER}@{REALM}", stdin=PASSWORD + "\n")
    out = tmp_path / "cas.toml"
    done = cas_audit_here(krb_lab, "inventory", "discover", "--from", f"cas01.{DOMAIN}", "--auth", "kerberos",
                          "--delegate", "--scheme", "http", "--port", str(krb_lab.lab.port("CAS01")),
                          "--username", f"{USER}@{REALM}", "--out", str(out), ccache=ccache)
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    assert 'auth = "kerberos"' in text and f'address = "cas02.{DOMAIN}"' in text and 'site = "Hamburg"' in text
    refused = cas_audit_here(krb_lab, "inventory", "discover", "--from", f"cas01.{DOMAIN}", "--auth", "kerberos",
                             "--scheme", "http", "--port", str(krb_lab.lab.port("CAS01")), "--username",
                             f"{USER}@{REALM}", "--out", str(tmp_path / "x.toml"), ccache=ccache)
    assert refused.returncode == 2 and "second hop" in refused.stderr


def test_discover_from_without_a_forwardable_ticket_names_the_second_hop(krb_lab: KerberosLab,
                                                                        tmp_path: Path) -> None:
    """--delegate asks for delegation, but a ticket that is not forwardable cannot be
    delegated: Get-ExchangeServer on the host then fails, and the error says why."""
    ccache = tmp_path / "ccache"
    krb_lab.realm._run("kinit", "-F", "-c", f"FILE:{ccache}", f"{USER}@{REALM}", stdin=PASSWORD + "\n")
    out = tmp_path / "cas.toml"
    done = cas_audit_here(krb_lab, "inventory", "discover", "--from", f"cas01.{DOMAIN}", "--auth", "kerberos",
                          "--delegate", "--scheme", "http", "--port", str(krb_lab.lab.port("CAS01")),
                          "--username", f"{USER}@{REALM}", "--out", str(out), ccache=ccache)
    assert done.returncode == 3, done.stderr
    assert "second hop" in done.stderr and "inventory discover --ldap DC" in done.stderr
    assert "An operations error occurred" in done.stderr  # what the lab's Get-ExchangeServer met
    assert not out.exists()


@pytest.mark.parametrize("level", ["strict", "relaxed"])
def test_kerberos_over_https_binds_the_logon_to_the_certificate(krb_lab: KerberosLab, tmp_path: Path,
                                                                level: str) -> None:
    """A WinRM service with CbtHardeningLevel = Strict lets in only a logon carrying the
    channel binding token of its certificate; Relaxed (the default) checks one if sent.
    The scan's first Kerberos logon carries it: no logon is refused, no warning is said.
    (Before: pywinrm built its AP-REQ before the connection existed, so without a CBT;
    Strict refused it and pywinrm logged on again; after Relaxed let it in, pywinrm warned
    "Failed to get raw socket for CBT": the answer's body was read by our adapter.)"""
    ccache = tmp_path / "ccache"
    krb_lab.realm.kinit(f"{USER}@{REALM}", PASSWORD, ccache)
    fleet = krb_lab.folder / f"{level}.toml"   # beside the keytab and certificate it names
    fleet.write_text(HTTPS_STRICT_FLEET.replace('"strict"', f'"{level}"'), encoding="utf-8")
    with Lab(load_fleet(fleet)) as https_lab:
        inventory = tmp_path / "inventory.toml"
        https_lab.write_inventory(inventory)
        assert 'scheme = "https"' in inventory.read_text(encoding="utf-8")
        scan = cas_audit_here(krb_lab, "scan", "--inventory", str(inventory), ccache=ccache,
                              db=tmp_path / "history.db")
        stats = https_lab.stats("CAS05")
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert "1 scanned, 0 failed" in scan.stderr, scan.stderr
    assert "Warning" not in scan.stderr, scan.stderr
    assert stats.auth_failures == 0


def _negotiate(lab: Lab, ccache: Path, application_data: bytes | None) -> int:
    """One Kerberos logon (an empty POST, as pywinrm's first) to CAS05 with these bindings."""
    import gssapi
    import requests

    creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
    bindings = None if application_data is None else gssapi.raw.ChannelBindings(application_data=application_data)
    context = gssapi.SecurityContext(name=gssapi.Name(f"HTTP@cas05.{DOMAIN}", gssapi.NameType.hostbased_service),
                                     creds=creds, usage="initiate", channel_bindings=bindings,
                                     flags=gssapi.RequirementFlag.mutual_authentication)
    token = base64.b64encode(context.step()).decode("ascii")
    url = f"https://cas05.{DOMAIN}:{lab.port('CAS05')}/wsman"
    answer = requests.post(url, data=b"", headers={"Authorization": f"Negotiate {token}"},
                           verify=str(lab.fleet.lab.tls_cert), timeout=30)
    return answer.status_code


def test_the_strict_lab_refuses_a_wrong_or_missing_channel_binding(krb_lab: KerberosLab, tmp_path: Path) -> None:
    """The lab models CbtHardeningLevel = Strict: MIT's acceptor, given the certificate's
    bindings, refuses other bindings; the lab refuses a logon without any."""
    ccache = tmp_path / "ccache"
    krb_lab.realm.kinit(f"{USER}@{REALM}", PASSWORD, ccache)
    with Lab(load_fleet(krb_lab.folder / "strict.toml")) as strict_lab:
        der = ssl.PEM_cert_to_DER_cert(Path(strict_lab.fleet.lab.tls_cert).read_text(encoding="ascii"))
        right = b"tls-server-end-point:" + hashlib.sha384(der).digest()   # signed with SHA-384
        assert _negotiate(strict_lab, ccache, right) == 200
        assert _negotiate(strict_lab, ccache, b"tls-server-end-point:" + bytes(48)) == 401
        assert _negotiate(strict_lab, ccache, None) == 401
        assert strict_lab.stats("CAS05").auth_failures == 2
