"""Kerberos for the WinRM client: a ticket from a password, and one sentence per failure.

pywinrm's `kerberos` transport (pykerberos, from the `kerberos` extra) takes the user's
ticket from the credential cache: whatever `kinit` left there (KRB5CCNAME or the default
cache), found by the principal the inventory names. When a password is given instead
(CAS_AUDIT_PASSWORD or the keyring), `ensure_ticket()` asks the KDC for a ticket with it
(python-gssapi, also from the `kerberos` extra) and keeps it in a private credential cache
of this process, one per principal (FILE: caches in a 0700 temporary folder, removed at
exit). The password never reaches a file, an argument or the environment.

Which cache a collection uses is set for its own thread only, never in the process
environment: `ensure_ticket()` names the principal's private cache, or (no password)
resets to kinit's cache, with gss_krb5_ccache_name (python-gssapi's `krb5_ccache_name`),
which MIT keeps per thread and applies to every credential pykerberos acquires in that
thread (both use the same libgssapi_krb5). It names one cache, not a collection: MIT
searches a thread's DIR: collection for a principal's cache only when the environment
names it (tested: "No credentials cache found"). Setting KRB5CCNAME from a worker thread would race with the
other workers' getenv inside libkrb5, and would point an account that relies on kinit's
cache at the private one (an inventory mixing both failed; tests/test_kerberos.py).

The realm comes from the user name (`auditor@CONTOSO.COM`) or krb5.conf's default_realm;
the KDC and the host-to-realm mapping from krb5.conf (KRB5_CONFIG names another file).
MIT Kerberos and Active Directory report failures with the krb5 error codes decoded in
`explain()`; each becomes one sentence that says what to do (docs/kerberos.md).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import typing

from scanner.errors import CollectionError

# MIT krb5 error table (krb5/src/lib/krb5/error_tables/krb5_err.et: base -1765328384) and
# GSS-API major status codes (RFC 2744 section 3.9.1).
_KRB5 = -1765328384
KDC_ERR_C_PRINCIPAL_UNKNOWN = _KRB5 + 6
KDC_ERR_S_PRINCIPAL_UNKNOWN = _KRB5 + 7
KDC_ERR_KEY_EXPIRED = _KRB5 + 23
KDC_ERR_PREAUTH_FAILED = _KRB5 + 24
AP_ERR_BAD_INTEGRITY = _KRB5 + 31
AP_ERR_TKT_EXPIRED = _KRB5 + 32
AP_ERR_SKEW = _KRB5 + 37
KDC_ERR_WRONG_REALM = _KRB5 + 68
REALM_UNKNOWN = _KRB5 + 154          # "Cannot find KDC for realm ..."
KDC_UNREACH = _KRB5 + 156            # "Cannot contact any KDC for realm ..."
CC_NOTFOUND = _KRB5 + 141            # "Matching credential not found"
FCC_NOFILE = _KRB5 + 195             # "No credentials cache found"
GSS_S_NO_CRED = 7 << 16
GSS_S_CREDENTIALS_EXPIRED = 11 << 16

_CODE = re.compile(r"-17653\d{5}|\b25296\d{5}\b|\b\d{5,7}\b")
_lock = threading.Lock()
_cache_dir: str | None = None
_tickets: dict[str, float] = {}      # principal -> monotonic time its ticket ends
_caches: dict[str, str] = {}         # principal -> its private credential cache ("FILE:...")


def realm_of(principal: str) -> str | None:
    """The realm part of user@REALM, or None (then krb5.conf's default_realm applies)."""
    _, at, realm = principal.rpartition("@")
    return realm if at else None


def explain(detail: str, codes: set[int], *, user: str, host: str, service: str = "HTTP") -> str:
    """One sentence for a Kerberos failure, from its error codes (and text when no code fits)."""
    realm = realm_of(user) or "the default realm of krb5.conf"
    if AP_ERR_SKEW in codes or "clock skew" in detail.lower():
        return ("Kerberos refused the logon because this machine's clock and the domain's differ by more "
                "than the allowed skew (5 minutes by default): synchronise this machine's time with the "
                "domain controllers (NTP) and scan again")
    if AP_ERR_TKT_EXPIRED in codes or GSS_S_CREDENTIALS_EXPIRED in codes \
            or ("expired" in detail.lower() and KDC_ERR_KEY_EXPIRED not in codes):
        return (f"the Kerberos ticket of {user} has expired: run `kinit {user}` again, or set "
                "CAS_AUDIT_PASSWORD so the scan gets a fresh ticket of its own")
    if REALM_UNKNOWN in codes or KDC_ERR_WRONG_REALM in codes or "cannot find kdc" in detail.lower():
        return (f"the Kerberos realm of {user} ({realm}) is not one this machine knows: write the user as "
                "user@REALM with the Active Directory domain's DNS name in capitals (e.g. auditor@CONTOSO.COM), "
                "and check the realm's entry in krb5.conf")
    if KDC_UNREACH in codes:
        return (f"no KDC of realm {realm} answered: check the kdc lines of krb5.conf (or DNS SRV records) and "
                "that port 88 of a domain controller is reachable")
    if KDC_ERR_C_PRINCIPAL_UNKNOWN in codes:
        return f"the KDC of realm {realm} does not know the user {user}: check the user name and its realm"
    if KDC_ERR_S_PRINCIPAL_UNKNOWN in codes:
        return (f"the KDC knows no service principal {service}/{host}: address the server by the FQDN of its computer "
                "account (not an IP address or alias) and check the [domain_realm] mapping of krb5.conf")
    if KDC_ERR_KEY_EXPIRED in codes:
        return f"the password of {user} has expired: change it in Active Directory"
    if KDC_ERR_PREAUTH_FAILED in codes or AP_ERR_BAD_INTEGRITY in codes:
        return f"the KDC rejected the password of {user}: check CAS_AUDIT_PASSWORD or the keyring entry"
    if GSS_S_NO_CRED in codes or CC_NOTFOUND in codes or FCC_NOFILE in codes:
        return (f"there is no Kerberos ticket for {user}: run `kinit {user}` before the scan, or set "
                "CAS_AUDIT_PASSWORD")
    text = " ".join(detail.split())[:200]
    return f"Kerberos logon of {user} to {host} failed: {text or 'no detail given'}"


def refused_by_server(user: str, host: str) -> str:
    """The sentence for a server that answered a valid ticket with 401 (no reason given)."""
    return (f"{host} refused the Kerberos ticket of {user}: its clock may differ from the domain's by more than "
            f"the allowed skew (5 minutes by default), or its key for HTTP/{host} may not be its computer "
            "account's (check the clock, the SPN and that the address is the server's own FQDN)")


def codes_in(text: str) -> set[int]:
    """The numbers in a GSS-API error text as pykerberos renders it (major and minor codes)."""
    # python-gssapi gives minor codes unsigned (2529638912 is -1765328384)
    return {n - (1 << 32) if n >= 1 << 31 else n for n in map(int, _CODE.findall(text))}


def failure(detail: str, *, user: str, host: str, service: str = "HTTP") -> CollectionError:
    """A CollectionError of kind "auth" with the sentence for this failure (`service`: the
    first part of the server's principal, HTTP for WinRM, ldap for a domain controller)."""
    return CollectionError("auth", explain(detail, codes_in(detail), user=user, host=host, service=service))


def use_cache(name: str | None) -> None:
    """Make `name` (e.g. "DIR:/tmp/x") this thread's Kerberos credential cache, or with None
    the one KRB5CCNAME or krb5.conf names (kinit's): MIT's gss_krb5_ccache_name is per thread."""
    try:
        from gssapi.raw import krb5_ccache_name
    except ImportError:
        if name is None:
            return  # without python-gssapi no private cache was ever named
        raise CollectionError("internal", "Kerberos with a password needs python-gssapi: install cas-audit's "
                              "kerberos extra (pip install 'cas-audit[kerberos]') or use kinit") from None
    krb5_ccache_name(name.encode() if name is not None else None)


def ensure_ticket(principal: str, password: str | None, *, host: str) -> None:
    """Point this thread's Kerberos at the right cache before a collection: with a password,
    a current ticket of `principal` in this process's private collection (see the module
    text); without one, the existing credential cache (kinit) as it is."""
    if sys.platform == "win32":
        # Windows: pywinrm's Kerberos (winkerberos, SSPI) is the logged-on account's; a
        # password cannot be handed to it, and python-gssapi does not exist there.
        return
    if not password:
        use_cache(None)
        return
    global _cache_dir
    with _lock:
        ends = _tickets.get(principal)
        if ends is None or ends - time.monotonic() <= 60:
            try:
                import gssapi
                import gssapi.raw
            except ImportError:
                raise CollectionError("internal", "Kerberos with a password needs python-gssapi: install "
                                      "cas-audit's kerberos extra (pip install 'cas-audit[kerberos]') or use "
                                      "kinit") from None
            try:
                name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
                creds = gssapi.raw.acquire_cred_with_password(name, password.encode("utf-8"), usage="initiate")
                if _cache_dir is None:
                    _cache_dir = tempfile.mkdtemp(prefix="cas-audit-krb5-")
                    atexit.register(shutil.rmtree, _cache_dir, True)
                cache = _caches.get(principal) or f"FILE:{os.path.join(_cache_dir, f'cc{len(_caches)}')}"
                gssapi.raw.store_cred_into({b"ccache": cache.encode()}, creds.creds,
                                           usage="initiate", overwrite=True, set_default=False)
            except gssapi.raw.GSSError as exc:
                detail = f"{exc.gen_message()} ({exc.maj_code}, {exc.min_code})"
                raise failure(detail, user=principal, host=host) from None
            _caches[principal] = cache
            _tickets[principal] = time.monotonic() + (creds.lifetime or 0)
        cache = _caches[principal]
    use_cache(cache)


def bind_to_tls(session: typing.Any, *, https: bool) -> None:
    """Kerberos over https: the first logon answers the server's 401, so that its AP-REQ
    carries the channel binding token of the connection's certificate (RFC 5929
    'tls-server-end-point', what WinRM's CbtHardeningLevel = Strict requires).

    pywinrm's Kerberos sends its token pre-emptively, built before any connection exists,
    so without a CBT: a Strict service refuses that logon (pywinrm then logs on again), and
    after an accepted one pywinrm looks for the certificate behind the answer, whose body
    httpguard has already read, and warns that it found no socket. Answering the 401, it
    reads the certificate from the 401's connection (httpguard leaves a challenge unread).
    Other auth methods (no `force_preemptive`) and http are left as they are."""
    auth = session.auth
    if https and hasattr(auth, "force_preemptive") and getattr(auth, "send_cbt", False):
        auth.force_preemptive = False
