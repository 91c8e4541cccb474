"""Signed reports: `keys generate`, `report --sign-key`, `verify-report`; the seal in the JSON
run and on the workbook's Summary; a key other users may read is refused."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from test_seal_chain import add_run

from scanner.cli import cli
from scanner.errors import TamperedError
from scanner.facts import REPORT_FORMATS
from scanner.store import open_store
from scanner.util.signing import verify_report


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """A sealed history of two runs, a key pair, and run 2's JSON and workbook signed."""
    folder = tmp_path_factory.mktemp("signed")
    url = f"sqlite:///{folder / 'history.db'}"
    with open_store(url) as store:
        add_run(store, 0)
        run_id = add_run(store, 1)
        seal = store.run_seal(run_id)
    code, out = run_cli("keys", "generate", "--out", str(folder / "keys"))
    assert code == 0, out
    key = folder / "keys" / "cas-audit-signing.key"
    for fmt in ("json", "xlsx"):
        code, out = run_cli("report", "--db", url, "--format", fmt, "--out", str(folder / f"report.{fmt}"),
                            "--sign-key", str(key))
        assert code == 0, out
    return {"folder": folder, "url": url, "seal": seal or "", "key": key, "pub": folder / "keys" / "cas-audit-signing.pub"}


def test_keys_generate_writes_a_private_key_only_its_owner_reads(signed: dict[str, Path | str], tmp_path: Path) -> None:
    key = Path(signed["key"])
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert Path(signed["pub"]).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    code, out = run_cli("keys", "generate", "--out", str(key.parent))  # never replaces a pair
    assert code == 2 and "refusing to replace a signing key" in out


def test_a_signed_report_verifies_and_carries_the_seal(signed: dict[str, Path | str]) -> None:
    folder = Path(signed["folder"])
    report = json.loads((folder / "report.json").read_text("utf-8"))
    assert report["run"]["seal"] == signed["seal"] and re.fullmatch(r"[0-9a-f]{64}", str(signed["seal"]))
    # the contract's run object (docs/contracts.md), in its order, then the seal (additions may follow)
    assert list(report["run"])[:8] == ["id", "started_at", "finished_at", "status", "servers_planned",
                                       "servers_scanned", "tool_version", "seal"]
    sig = json.loads((folder / "report.json.sig.json").read_text("utf-8"))
    assert sig["run_id"] == 2 and sig["seal"] == signed["seal"] and sig["file"] == "report.json"
    assert {"sha256", "key_id", "signature", "tool_version", "catalog_version", "as_of"} <= set(sig)
    for fmt in ("json", "xlsx"):
        code, out = run_cli("verify-report", str(folder / f"report.{fmt}"), "--public-key", str(signed["pub"]))
        assert code == 0 and "intact" in out, out
    key_text = Path(signed["key"]).read_text("ascii").splitlines()[1]
    for written in folder.glob("report.*"):
        assert key_text.encode() not in written.read_bytes()


def test_the_workbook_summary_shows_the_seal_and_the_key_id(signed: dict[str, Path | str]) -> None:
    folder = Path(signed["folder"])
    sig = json.loads((folder / "report.xlsx.sig.json").read_text("utf-8"))
    rows = {row[0]: row[1] for row in load_workbook(folder / "report.xlsx").worksheets[0].iter_rows(values_only=True)
            if row and row[0]}
    assert rows["Seal (SHA-256 chain of the history)"] == signed["seal"]
    assert rows["Signing key id"] == sig["key_id"]


def test_changed_bytes_of_a_small_report_fail(signed: dict[str, Path | str], tmp_path: Path) -> None:
    original = (Path(signed["folder"]) / "report.json").read_bytes()
    signature = Path(signed["folder"]) / "report.json.sig.json"
    copy = tmp_path / "report.json"
    for position in range(0, len(original), 4):  # every fourth byte (hypothesis below: any byte)
        changed = bytearray(original)
        changed[position] ^= 0x20
        copy.write_bytes(bytes(changed))
        with pytest.raises(TamperedError, match="is not the report that was signed"):
            verify_report(copy, Path(signed["pub"]), signature)
    copy.write_bytes(original)
    verify_report(copy, Path(signed["pub"]), signature)  # the untouched copy passes
    code, out = run_cli("verify-report", str(copy), "--public-key", str(signed["pub"]))
    assert code == 1 and "no readable signature" in out  # the copy has none beside it


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_changed_workbook_or_signature_file_fails(signed: dict[str, Path | str], tmp_path: Path,
                                                    data: st.DataObject) -> None:
    folder = Path(signed["folder"])
    workbook, signature = (folder / "report.xlsx").read_bytes(), (folder / "report.xlsx.sig.json").read_bytes()
    target = data.draw(st.sampled_from(["report", "signature"]))
    original = workbook if target == "report" else signature
    position = data.draw(st.integers(0, len(original) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = bytearray(original)
    changed[position] ^= flip
    (tmp_path / "r.xlsx").write_bytes(bytes(changed) if target == "report" else workbook)
    (tmp_path / "r.xlsx.sig.json").write_bytes(bytes(changed) if target == "signature" else signature)
    if target == "signature" and original[position:position + 1].isspace() and bytes([original[position] ^ flip]).isspace():
        return  # JSON white space between tokens is not part of what is signed
    with pytest.raises(TamperedError):
        verify_report(tmp_path / "r.xlsx", Path(signed["pub"]))


def test_a_private_key_others_may_read_is_refused(signed: dict[str, Path | str], tmp_path: Path) -> None:
    key = tmp_path / "open.key"
    key.write_bytes(Path(signed["key"]).read_bytes())
    key.chmod(0o644)
    out_file = tmp_path / "r.json"
    code, out = run_cli("report", "--db", str(signed["url"]), "--format", "json", "--out", str(out_file),
                        "--sign-key", str(key))
    assert code == 2 and "may be read by other users (mode 0644)" in out and "chmod 600" in out
    assert not out_file.exists()
    assert "PRIVATE KEY" not in out


def test_another_key_or_stdout_is_refused(signed: dict[str, Path | str], tmp_path: Path) -> None:
    code, _ = run_cli("keys", "generate", "--out", str(tmp_path / "other"))
    folder = Path(signed["folder"])
    code, out = run_cli("verify-report", str(folder / "report.json"), "--public-key",
                        str(tmp_path / "other" / "cas-audit-signing.pub"))
    assert code == 1 and "was signed with key" in " ".join(out.split())
    code, out = run_cli("report", "--db", str(signed["url"]), "--format", "json", "--sign-key", str(signed["key"]))
    assert code == 2 and "give --out FILE" in out


@pytest.mark.parametrize("fmt", REPORT_FORMATS)
def test_every_format_signed_verifies_and_one_changed_byte_exits_1(signed: dict[str, Path | str], tmp_path: Path,
                                                                  fmt: str) -> None:
    """The command line's contract for each `report --format`: exit 0 intact, 1 for a changed byte."""
    report = tmp_path / f"report.{fmt}"
    code, out = run_cli("report", "--db", str(signed["url"]), "--format", fmt, "--out", str(report),
                        "--sign-key", str(signed["key"]))
    assert code == 0, out
    code, out = run_cli("verify-report", str(report), "--public-key", str(signed["pub"]))
    assert code == 0 and "intact" in out, out
    original = report.read_bytes()
    for position in (0, len(original) // 2, len(original) - 1):
        changed = bytearray(original)
        changed[position] ^= 0x01
        report.write_bytes(bytes(changed))
        code, out = run_cli("verify-report", str(report), "--public-key", str(signed["pub"]))
        assert code == 1 and "is not the report that was signed" in " ".join(out.split()), (position, out)
