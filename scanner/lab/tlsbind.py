"""The lab's https listener and the WinRM service's CbtHardeningLevel (docs/lab.md, "https
and channel binding").

A fleet with [lab] tls_cert and tls_key serves https: each connection's TLS handshake runs
in its handler thread with that certificate. Over https, a Negotiate logon (NTLM or
Kerberos) may carry a channel binding token (CBT): the RFC 5929 'tls-server-end-point'
hash of the server's certificate, bound into the NTLM AUTHENTICATE message or the Kerberos
authenticator. WinRM's ServiceAuthType CbtHardeningLevel ([MS-WSMV] 2.2.4.34, default
Relaxed) decides what the service does with it, following HTTP.sys' hardening levels
(HTTP_AUTHENTICATION_HARDENING_LEVELS):

- "none": no CBT is looked at;
- "relaxed": a logon with a CBT that does not match the certificate is refused, one
  without a CBT is let in;
- "strict": only a logon carrying the matching CBT is let in.

The acceptor (pyspnego, MIT Kerberos through gssapi for Kerberos) is given the bindings
and refuses a mismatch itself (GSS_S_BAD_BINDINGS); for "strict" a Kerberos logon must also
come back with GSS_C_CHANNEL_BOUND_FLAG, which MIT sets only when the authenticator carried
matching bindings. pyspnego's NTLM acceptor, once given bindings, refuses a logon without
them too, so an NTLM lab checks them under "strict" only (under "relaxed" an NTLM CBT is
not checked: a lab limitation).
"""

from __future__ import annotations

import ssl
import typing

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from spnego.channel_bindings import GssChannelBindings

CBT_LEVELS = ("relaxed", "strict", "none")
GSS_C_CHANNEL_BOUND_FLAG = 0x800  # MIT krb5 >= 1.19, gssapi_ext.h


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def end_point_hash(cert_der: bytes) -> bytes:
    """RFC 5929 4.1: the certificate's hash with its signature's hash algorithm, SHA-256
    when that is MD5 or SHA-1."""
    algorithm = x509.load_der_x509_certificate(cert_der).signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return digest.finalize()


def certificate_bindings(cert_file: str) -> GssChannelBindings:
    """The 'tls-server-end-point' channel bindings of the certificate in `cert_file` (PEM)."""
    with open(cert_file, "rb") as handle:
        der = x509.load_pem_x509_certificate(handle.read()).public_bytes(Encoding.DER)
    return GssChannelBindings(application_data=b"tls-server-end-point:" + end_point_hash(der))


def acceptor_bindings(level: str, auth: str, bindings: GssChannelBindings | None) -> GssChannelBindings | None:
    """The bindings the acceptor checks a logon against, None when it checks none."""
    if bindings is None or level == "none" or (auth == "ntlm" and level != "strict"):
        return None
    return bindings


def channel_bound(ctx: typing.Any, level: str, auth: str) -> bool:
    """Whether a completed logon passes `level`: under "strict", a Kerberos logon must have
    carried the matching bindings (an NTLM one was refused by the acceptor otherwise)."""
    if level != "strict" or auth != "kerberos":
        return True
    mech = getattr(ctx, "_context", None)  # pyspnego's Negotiate proxy -> its Kerberos context
    return bool(int(getattr(mech, "_context_attr", 0) or 0) & GSS_C_CHANNEL_BOUND_FLAG)

