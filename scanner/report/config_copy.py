"""`cas-audit evidence`: a config file (or the file its appSettings names in file= or
configSource=) exactly as collected, hash-checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

from scanner.errors import ConfigError, StoreError
from scanner.store.repo import Store
from scanner.util.safefile import write_file


def stored_config(store: Store, server: str, protocol: str, run_id: int | None, *,
                  referenced: bool = False) -> bytes:
    """The collected bytes of a server's config file in run `run_id` (None: the latest run that has it);
    with `referenced`, of the file its appSettings names in file= or configSource=."""
    entries = store.history(server, protocol)
    if not entries:
        raise ConfigError(f"no observation of server {server!r} in the history")
    candidates = [(rid, obs) for rid, obs in entries if run_id is None or rid == run_id]
    if not candidates:
        raise ConfigError(f"server {server!r} was not observed in run {run_id}")
    for rid, obs in reversed(candidates):
        p = obs.protocols.get(protocol)
        if obs.scan_status != "ok" or p is None:
            continue
        sha = p.config_sha256
        if referenced:
            ref = p.config_reference
            if ref is None:
                raise ConfigError(f"the {protocol} config file of {server} in run {rid} names no file in "
                                  "appSettings file= or configSource=")
            if ref.sha256 is None:
                why = "it does not exist" if ref.outcome == "absent" else f"outcome {ref.outcome}"
                raise ConfigError(f"run {rid} holds no copy of {ref.attribute}={ref.value!r} of {server} "
                                  f"{protocol}: {why}" + (f" ({ref.error})" if ref.error else ""))
            sha = ref.sha256
        elif sha is None:
            raise ConfigError(f"run {rid} holds no {protocol} config file of {server}: "
                              f"status {p.config_status}")
        content = store.config_blob(sha)
        if content is None:
            raise StoreError(f"the history lost the file with sha256 {sha}")
        if hashlib.sha256(content).hexdigest() != sha:
            raise StoreError(f"the stored file {sha} does not match its hash")
        return content
    raise ConfigError(f"server {server!r} was not scanned successfully in run {run_id}"
                      if run_id is not None else f"server {server!r} was never scanned successfully")


def write_config_copy(store: Store, server: str, protocol: str, run_id: int | None, out: Path, *,
                   force: bool = False, referenced: bool = False) -> tuple[str, int]:
    """Write the file byte for byte (an existing file only with `force`); return its sha256 and size."""
    content = stored_config(store, server, protocol, run_id, referenced=referenced)
    write_file(out, content, force=force)
    return hashlib.sha256(content).hexdigest(), len(content)
