"""Signed reports: Ed25519 key pairs (`cas-audit keys generate`), a signature file beside
each report (`report --sign-key`, `<report>.sig.json`) and its check (`verify-report`).

The signature file is JSON: the report file's name and SHA-256, what it reports on (run id
or as-of time), the history's seal, tool and catalog versions, the key id (SHA-256 of the
raw public key, hex) and the Ed25519 signature (base64) over the canonical JSON of every
other field (sorted keys, ASCII, no spaces). The private key never leaves its file: it is
never logged, printed or written into a report; a key file that other users may read is
refused, as ssh refuses one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scanner.errors import ConfigError, TamperedError
from scanner.util.safefile import write_file

PRIVATE_NAME = "cas-audit-signing.key"
PUBLIC_NAME = "cas-audit-signing.pub"
SIGNATURE_FORMAT = "cas-audit-signature/1"
SIGNATURE_SUFFIX = ".sig.json"
_MAX_KEY_FILE = 64 * 1024


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def key_id(public: Ed25519PublicKey) -> str:
    """The key's id: SHA-256 (hex) of its 32 raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keys(folder: Path) -> tuple[Path, Path, str]:
    """Write a new key pair into `folder` (private key mode 0600); refuses to replace one.
    Returns the two paths and the key id."""
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise ConfigError(f"{path} already exists; refusing to replace a signing key",
                              hint="choose another --out folder, or remove the old pair first")
    private = Ed25519PrivateKey.generate()
    write_file(private_path, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()), mode=0o600)
    public = private.public_key()
    write_file(public_path, public.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, key_id(public)


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(f"{path} is too large to be an Ed25519 {what}")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key of `path`; refused when other users may read the file."""
    if sys.platform != "win32":
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError as exc:
            raise ConfigError(f"cannot read the private key {path}: {exc.strerror or exc}") from None
        if mode & 0o077:
            raise ConfigError(f"the private key {path} may be read by other users (mode {mode:04o}); "
                              "it is not used", hint=f"chmod 600 {path}")
    data = _read_key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted Ed25519 private key in PEM "
                          "(as `cas-audit keys generate` writes it)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an Ed25519 public key in PEM (as `cas-audit keys generate` "
                          "writes it)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def signature_path(report: Path) -> Path:
    return report.with_name(report.name + SIGNATURE_SUFFIX)


def signature_document(data: bytes, name: str, key: Ed25519PrivateKey, facts: dict[str, Any]) -> bytes:
    """The signature file's bytes for report `data` named `name`; `facts` are the run id or
    as-of time, the seal and the versions."""
    unsigned = {"format": SIGNATURE_FORMAT, "file": name, "sha256": hashlib.sha256(data).hexdigest(),
                "key_id": key_id(key.public_key()), **facts}
    signature = base64.b64encode(key.sign(_canonical(unsigned))).decode("ascii")
    return (json.dumps({**unsigned, "signature": signature}, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_signature(report: Path, data: bytes, key: Ed25519PrivateKey, facts: dict[str, Any], *,
                    force: bool = False) -> Path:
    """Write `<report>.sig.json` for the report bytes `data` just written to `report`."""
    target = signature_path(report)
    write_file(target, signature_document(data, report.name, key, facts), force=force)
    return target


def verify_report(report: Path, public_key: Path, signature: Path | None = None) -> dict[str, Any]:
    """Check `report` against its signature file and `public_key`; returns the signed fields.
    TamperedError (exit 1) for any difference."""
    key = load_public_key(public_key)
    sig_path = signature or signature_path(report)
    try:
        data = report.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {report}: {exc.strerror or exc}") from None
    try:
        document = json.loads(sig_path.read_bytes())
    except OSError as exc:
        raise TamperedError(f"no readable signature beside {report} ({sig_path}: {exc.strerror or exc})") from None
    except ValueError:
        raise TamperedError(f"the signature file {sig_path} is not valid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("signature"), str):
        raise TamperedError(f"the signature file {sig_path} holds no signature")
    fields = {k: v for k, v in document.items() if k != "signature"}
    if fields.get("key_id") != key_id(key):
        raise TamperedError(f"{sig_path} was signed with key {fields.get('key_id')!s:.64}, not with "
                            f"{public_key} (key {key_id(key)})")
    try:
        key.verify(base64.b64decode(document["signature"], validate=True), _canonical(fields))
    except (InvalidSignature, ValueError):
        raise TamperedError(f"the signature in {sig_path} does not match its contents: "
                            "the signature file was changed") from None
    if fields.get("sha256") != hashlib.sha256(data).hexdigest():
        raise TamperedError(f"{report} is not the report that was signed: its SHA-256 differs "
                            f"({hashlib.sha256(data).hexdigest()}, signed {fields.get('sha256')!s:.64})")
    return fields
