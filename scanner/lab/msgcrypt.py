"""WinRM message encryption as the lab speaks it: [MS-WSMV] 2.2.9.1.1 multipart/encrypted
bodies, sealed with the connection's NTLM or Kerberos security context (pyspnego), as
pywinrm's winrm/encryption.py sends them. Kerberos carries the GSS wrap header (60 bytes
for AES) in place of NTLM's 16-byte signature.
"""

from __future__ import annotations

import struct
import typing

ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"


def is_encrypted(content_type: str) -> bool:
    """Whether a Content-Type header announces an [MS-WSMV] encrypted body."""
    content_type = content_type.lower()
    return (content_type.startswith("multipart/encrypted")
            and f'protocol="{ENCRYPTED_PROTOCOL.lower()}"' in content_type)


def decrypt(ctx: typing.Any, body: bytes, *, kerberos: bool) -> bytes:
    """The SOAP body of an encrypted request; ValueError for anything malformed."""
    # [MS-WSMV] 2.2.9.1.1: two MIME parts, a header part with the plain length, then
    # the octet stream: 4-byte little-endian signature length, signature, sealed data.
    terminator = BOUNDARY + b"--\r\n"
    if not body.startswith(BOUNDARY + b"\r\n") or not body.endswith(terminator):
        raise ValueError("not a multipart/encrypted body")
    second = body.find(BOUNDARY + b"\r\n", len(BOUNDARY) + 2)
    if second < 0:
        raise ValueError("missing second MIME part")
    head = body[len(BOUNDARY) + 2:second]
    if f"Content-Type: {ENCRYPTED_PROTOCOL}".encode().lower() not in head.lower():
        raise ValueError("wrong encrypted protocol")
    marker = b"Length="
    at = head.find(marker)
    digits = head[at + len(marker):].strip() if at >= 0 else b""
    if not digits.isdigit() or len(digits) > 9:
        raise ValueError("missing OriginalContent Length")
    expected = int(digits)
    part = body[second + len(BOUNDARY) + 2:len(body) - len(terminator)]
    octet_header = b"\tContent-Type: application/octet-stream\r\n"
    if not part.startswith(octet_header):
        raise ValueError("missing octet-stream part")
    stream = part[len(octet_header):]
    if len(stream) < 4:
        raise ValueError("truncated encrypted stream")
    sig_len = struct.unpack("<I", stream[:4])[0]
    if not (16 <= sig_len <= 1024 if kerberos else sig_len == 16) or len(stream) < 4 + sig_len:
        raise ValueError("bad signature length")
    signature, sealed = stream[4:4 + sig_len], stream[4 + sig_len:]
    try:
        if kerberos:   # the GSS wrap header (RFC 4121 token with its checksum) comes apart
            plain = ctx.unwrap_winrm(signature, sealed)
        else:
            plain = ctx.unwrap(signature + sealed).data
    except Exception as exc:
        raise ValueError(f"unwrap failed: {type(exc).__name__}") from None
    if len(plain) != expected:
        raise ValueError("decrypted length differs from OriginalContent Length")
    return typing.cast(bytes, plain)


def encrypt(ctx: typing.Any, plain: bytes, *, kerberos: bool) -> bytes:
    """`plain` sealed and framed as an encrypted response body."""
    if kerberos:
        result = ctx.wrap_winrm(plain)
        signature, sealed = bytes(result.header), bytes(result.data)
    else:
        wrapped: bytes = ctx.wrap(plain, encrypt=True).data
        signature, sealed = wrapped[:16], wrapped[16:]
    return (BOUNDARY + b"\r\n"
            + f"\tContent-Type: {ENCRYPTED_PROTOCOL}\r\n".encode()
            + f"\tOriginalContent: type={SOAP_CONTENT_TYPE};Length={len(plain)}\r\n".encode()
            + BOUNDARY + b"\r\n"
            + b"\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<I", len(signature)) + signature + sealed
            + BOUNDARY + b"--\r\n")
