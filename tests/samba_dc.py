"""A real Active Directory domain controller on loopback for the tests: Samba's AD DC from
Debian (packages samba, samba-ad-dc, samba-ad-provision), provisioned once per test session
into a private folder.

`SambaDC.create()` provisions a realm (`samba-tool domain provision --use-rfc2307
--dns-backend=NONE`, about 4 s of CPU), adds the Exchange schema extension and the Exchange
configuration objects of tests/directory/*.ldif to the offline database, and creates the
test account; the result is kept as a template (under ~/.cache/cas-audit-tests, named by a
hash of its inputs) that later sessions copy instead. Each DC then gets its own smb.conf
(loopback only, the services the tests need, a TLS certificate of the tests' own CA). `start()` runs `samba -i -M single` in the foreground and waits
for LDAPS; `stop()` ends it (the fixture always does), and a test process that dies takes
its DC with it: no process is left behind.

Samba listens on the fixed LDAP ports 389/636 (smb.conf has no option for them; only
`krb5 port` and `cldap port` exist), so each DC gets its own loopback address: one on which
nothing listens on those ports. Samba accepts any 127.0.0.0/8 address given with its
netmask (`interfaces = 127.0.X.Y/8`); a bare address gives "no network interfaces found".
Nothing under /etc is written or read: Kerberos clients use the krb5.conf of `krb5_conf`
through KRB5_CONFIG.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PACKAGES = ("samba", "samba-ad-dc", "samba-ad-provision")
DIRECTORY = Path(__file__).parent / "directory"
#: The Python that runs samba-tool: it has Samba's own bindings (python3-samba).
SAMBA_PYTHON = "/usr/bin/python3"
#: Provisioned directories, one per set of inputs, kept across test sessions (SambaDC._template).
TEMPLATES = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cas-audit-tests"
LDAP_PORTS = (389, 636, 88, 464, 3268, 3269)


def missing() -> str | None:
    """Why no DC can run here, or None."""
    for tool in ("samba", "samba-tool"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed (Debian: apt-get install {' '.join(PACKAGES)})"
    probe = subprocess.run([SAMBA_PYTHON, "-c", "import samba.samdb"], capture_output=True)
    if probe.returncode != 0:
        return f"{SAMBA_PYTHON} has no Samba bindings (python3-samba)"
    if os.geteuid() != 0:
        return "Samba must run as root to listen on the LDAP ports 389 and 636"
    return None


def free_loopback_address(first: int = 60, last: int = 249) -> str:
    """A 127.0.X.1 on which none of the DC's ports is in use (another session's DC, say).
    The search starts at a random X: two sessions provisioning at once (each takes seconds
    between choosing and listening) rarely choose the same one; `start` notices if they did."""
    span = last - first + 1
    offset = random.randrange(span)
    for step in range(span):
        address = f"127.0.{first + (offset + step) % span}.1"
        if all(_port_free(address, port) for port in LDAP_PORTS):
            return address
    raise RuntimeError(f"no loopback address with free LDAP ports in 127.0.{first}-{last}.1")


def _port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Account:
    user: str       # sAMAccountName
    password: str


class SambaDC:
    """One realm served by one `samba -i -M single` process on one loopback address."""

    def __init__(self, folder: Path, *, realm: str, netbios: str, host: str, address: str,
                 account: Account, admin_password: str) -> None:
        self.folder = folder
        self.realm = realm.upper()
        self.domain = realm.lower()
        self.netbios = netbios
        self.host = host
        self.fqdn = f"{host}.{self.domain}".lower()
        self.address = address
        self.account = account
        self.admin_password = admin_password
        self.base_dn = ",".join(f"DC={part}" for part in self.domain.split("."))
        self.config_dn = f"CN=Configuration,{self.base_dn}"
        self.smb_conf = folder / "etc" / "smb.conf"
        self.krb5_conf = folder / "krb5.conf"
        self.ca_pem = folder / "tls" / "ca.pem"
        self.log = folder / "samba.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a Kerberos client needs for this realm (and nothing of /etc/krb5.conf)."""
        return {"KRB5_CONFIG": str(self.krb5_conf)}

    @property
    def user_principal(self) -> str:
        return f"{self.account.user}@{self.realm}"

    def create(self, *ldif_files: Path) -> None:
        """The provisioned realm with the schema extension and `ldif_files` written offline
        (a copy of the template of these inputs), then this DC's certificate and configuration."""
        self.folder.mkdir(parents=True, exist_ok=True)
        texts = [self._text(DIRECTORY / name) for name in ("dc-spn.ldif", "exchange-schema.ldif")]
        texts += [self._text(f) for f in ldif_files]
        shutil.copytree(self._template(texts), self.folder, symlinks=True, dirs_exist_ok=True)
        self._write_tls()
        self._write_smb_conf(self.folder)
        self._write_krb5_conf()

    def _template(self, texts: list[str]) -> Path:
        """A provisioned and written directory for these inputs, made once and kept in
        TEMPLATES (provisioning costs seconds of CPU; a copy, a tenth of one). Its name
        is a hash of everything that goes into it: Samba's version, this file and
        samba_apply.py, the realm's names and passwords, the LDIF texts. Nothing in it
        names its folder or this DC's address (smb.conf, krb5.conf and the certificate are
        written per DC). Made in a folder of its own and renamed into place when complete:
        sessions making it at once each make one, the first rename wins."""
        version = subprocess.run([shutil.which("samba") or "/usr/sbin/samba", "--version"], capture_output=True,
                                 text=True, timeout=60).stdout
        key = hashlib.sha256("\0".join([
            version, Path(__file__).read_text(encoding="utf-8"),
            (DIRECTORY / "samba_apply.py").read_text(encoding="utf-8"), self.realm, self.netbios, self.host,
            self.account.user, self.account.password, self.admin_password, *texts]).encode()).hexdigest()[:24]
        template = TEMPLATES / f"samba-dc-{key}"
        if template.is_dir():
            return template
        TEMPLATES.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix="building-", dir=TEMPLATES))
        try:
            tool = shutil.which("samba-tool") or "/usr/bin/samba-tool"
            provision = [tool, "domain", "provision", "--use-rfc2307", "--dns-backend=NONE", "--server-role=dc",
                         f"--realm={self.realm}", f"--domain={self.netbios}", f"--host-name={self.host}",
                         f"--adminpass={self.admin_password}", f"--targetdir={building}",
                         f"--option=interfaces = {self.address}/8", "--option=bind interfaces only = yes"]
            _run(provision, "samba-tool domain provision")
            smb_conf = self._write_smb_conf(building)
            _run([SAMBA_PYTHON, str(DIRECTORY / "samba_apply.py"), str(smb_conf), self.account.user],
                 "writing the test directory", stdin=self.account.password + "\n" + "\n\n".join(texts))
            try:
                building.rename(template)
            except OSError:   # another session's template of the same inputs came first
                if not template.is_dir():
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
        return template

    def _text(self, path: Path) -> str:
        return (path.read_text(encoding="utf-8")
                .replace("${CONFIGDN}", self.config_dn).replace("${DOMAINDN}", self.base_dn)
                .replace("${DOMAIN}", self.domain).replace("${DCNAME}", self.host.upper())
                .replace("${DCFQDN}", self.fqdn))

    def _write_smb_conf(self, f: Path) -> Path:
        """smb.conf of a DC whose files are in folder `f`."""
        smb_conf = f / "etc" / "smb.conf"
        smb_conf.write_text(
            "[global]\n"
            f"  netbios name = {self.host.upper()}\n"
            f"  realm = {self.realm}\n"
            f"  workgroup = {self.netbios}\n"
            "  server role = active directory domain controller\n"
            f"  interfaces = {self.address}/8\n"
            "  bind interfaces only = yes\n"
            "  server services = ldap, cldap, kdc\n"
            # Simple binds only inside TLS (Samba's default, like AD with LDAP signing required);
            # a SASL bind inside TLS needs no SASL security layer, as on Windows (docs/exchange-facts.md).
            "  ldap server require strong auth = allow_sasl_over_tls\n"
            "  tls enabled = yes\n"
            f"  tls keyfile = {f / 'tls' / 'key.pem'}\n"
            f"  tls certfile = {f / 'tls' / 'cert.pem'}\n"
            f"  tls cafile = {f / 'tls' / 'ca.pem'}\n"
            f"  private dir = {f / 'private'}\n"
            f"  lock directory = {f}\n"
            f"  pid directory = {f}\n"
            f"  state directory = {f / 'state'}\n"
            f"  cache directory = {f / 'cache'}\n"
            f"  binddns dir = {f / 'bind-dns'}\n"
            f"  log file = {f / 'samba.log'}\n"
            "  max log size = 1000\n"
            "  idmap_ldb:use rfc2307 = yes\n",
            encoding="utf-8")
        return smb_conf

    def _write_krb5_conf(self) -> None:
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"  default_realm = {self.realm}\n"
            "  dns_lookup_realm = false\n"
            "  dns_lookup_kdc = false\n"
            "  rdns = false\n"
            "  dns_canonicalize_hostname = false\n"
            "  udp_preference_limit = 1\n"
            "[realms]\n"
            f"  {self.realm} = {{\n    kdc = {self.address}\n  }}\n"
            "[domain_realm]\n"
            f"  .{self.domain} = {self.realm}\n  {self.domain} = {self.realm}\n",
            encoding="utf-8")

    def _write_tls(self) -> None:
        """A CA of the tests and the DC's certificate for its FQDN and its address."""
        folder = self.folder / "tls"
        folder.mkdir(exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cas-audit test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName(self.fqdn), x509.IPAddress(ipaddress.ip_address(self.address))]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.fqdn)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(ca_key, hashes.SHA256()))
        key_path = folder / "key.pem"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)   # Samba refuses a key file others may read
        (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def start(self, timeout_s: float = 60) -> None:
        samba = shutil.which("samba") or "/usr/sbin/samba"
        # `samba -i` ends when its standard input closes ("server_stdin_handler: samba: EOF on
        # stdin"): the pipe's other end is this process's, so a test process that dies,
        # even by kill -9, takes its DC with it.
        self._process = subprocess.Popen([samba, "-i", "-M", "single", "-s", str(self.smb_conf)],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"samba exited with {self._process.returncode}: {err.strip()[-2000:]}")
            try:
                presented = _certificate_at(self.address, 636)
            except OSError:
                time.sleep(0.1)
                continue
            if presented != self.certificate_der:
                self.stop()
                raise RuntimeError(f"another domain controller (another test session's?) answers on "
                                   f"{self.address}:636, not the one provisioned here")
            return
        self.stop()
        raise RuntimeError(f"samba did not listen on {self.address}:636 within {timeout_s:.0f} s")

    @property
    def certificate_der(self) -> bytes:
        pem = (self.folder / "tls" / "cert.pem").read_bytes()
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()   # EOF: samba terminates itself
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _certificate_at(address: str, port: int) -> bytes | None:
    """The certificate an LDAPS listener presents (not verified: only compared)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=0.5) as sock, \
            context.wrap_socket(sock) as tls:
        return tls.getpeercert(binary_form=True)


def _run(args: list[str], what: str, *, stdin: str | None = None) -> None:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
