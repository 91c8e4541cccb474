"""Exchange 2007 builds: parse version strings, name the service pack and the rollup.

Exchange 2007 is version 8; the minor version is the service pack and each update rollup
raises ExSetup.exe's build number, so the build alone names the rollup. The one table of
builds is `exchange2007-builds.csv` beside this module (package data), copied from
Microsoft's "Exchange Server build numbers and release dates" page (its header comment
names the address). The registry's Patches list is a second opinion (`rollup_check`).
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

_SP_MINOR = {"RTM": 0, "SP1": 1, "SP2": 2, "SP3": 3}
_SP_ORDER = _SP_MINOR
TABLE_FILE = "exchange2007-builds.csv"


@dataclass(frozen=True)
class KnownBuild:
    """One row of Microsoft's build table."""

    service_pack: str  # RTM | SP1 | SP2 | SP3
    rollup: str | None  # "RU10", "RU3-v2"; None for the service pack's own release build
    version: tuple[int, int, int, int]
    released: str  # yyyy-mm-dd, or yyyy-mm where Microsoft gives only the month

    @property
    def build(self) -> str:
        return ".".join(str(n) for n in self.version)


@dataclass(frozen=True)
class BuildInfo:
    """One Exchange build and what it means."""

    build: str  # normalised "8.1.240.6" (AdminDisplayVersion gives only "8.3.83" style: no revision)
    major: int | None
    minor: int | None
    build_number: int | None
    revision: int | None
    service_pack: str | None  # RTM | SP1 | SP2 | SP3 | None (not Exchange 2007 or minor unknown)
    recognised: bool  # the build is a row of Microsoft's table
    below_sp3: bool  # an Exchange 2007 level below SP3 (RTM, SP1, SP2)
    rollup_range: bool  # above the service pack's release build: a rollup is installed
    rollup: str | None = None  # the rollup the table names for this build ("RU10"); None for none/unknown


def _version(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p) for p in text.split("."))
    if len(parts) != 4:
        raise ValueError(f"not a four-part build: {text!r}")
    return parts[0], parts[1], parts[2], parts[3]


@functools.cache
def known_builds() -> tuple[KnownBuild, ...]:
    """Every Exchange 2007 build of Microsoft's table, in the table's order."""
    text = importlib.resources.files(__package__ or "scanner.parse").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    table = []
    for row in rows:
        sp, rollup = row["service_pack"].strip(), row["rollup"].strip()
        if sp not in _SP_MINOR:
            raise ValueError(f"{TABLE_FILE}: unknown service pack {sp!r}")
        version = _version(row["build"].strip())
        if version[:2] != (8, _SP_MINOR[sp]):
            raise ValueError(f"{TABLE_FILE}: build {row['build']} does not belong to {sp}")
        table.append(KnownBuild(sp, None if rollup == "0" else f"RU{rollup}", version, row["date"].strip()))
    return tuple(table)


@functools.cache
def _by_version() -> dict[tuple[int, int, int, int], KnownBuild]:
    return {row.version: row for row in known_builds()}


def release_build(minor: int) -> KnownBuild | None:
    """The release build of Exchange 2007's service pack `minor` (0 = RTM), without rollups."""
    return next((r for r in known_builds() if r.version[1] == minor and r.rollup is None), None)


def sp3_build() -> str:
    """The release build of Exchange 2007 SP3 ("8.3.83.6"), the level XS-012 asks for and the
    lab's default, read from Microsoft's table."""
    sp3 = release_build(_SP_MINOR["SP3"])
    if sp3 is None:
        raise ValueError(f"{TABLE_FILE} has no release build of SP3")
    return sp3.build


_DOTTED = re.compile(r"^\s*(\d{1,9})\.(\d{1,9})(?:\.(\d{1,9}))?(?:\.(\d{1,9}))?\s*$", re.ASCII)
# "Version 8.3 (Build 83.6)": Get-ExchangeServer's AdminDisplayVersion; the "Build x.y"
# part is build_number.revision, and it never reflects an installed rollup.
_ADMIN = re.compile(
    r"^\s*Version\s+(\d{1,9})\.(\d{1,9})\s*\(\s*Build\s+(\d{1,9})\.(\d{1,9})\s*\)\s*$",
    re.IGNORECASE | re.ASCII,
)
# FileVersion strings sometimes carry a trailing comment: "08.01.0240.006 (Build ...)"
_LEADING_DOTTED = re.compile(r"^\s*(\d{1,9}(?:\.\d{1,9}){1,3})(?:\s+\S.*)?$", re.ASCII)


def _make(major: int, minor: int, build: int | None, rev: int | None) -> BuildInfo:
    parts = [str(major), str(minor)] + [str(p) for p in (build, rev) if p is not None]
    sp = next((name for name, m in _SP_MINOR.items() if m == minor), None) if major == 8 else None
    below = sp is not None and _SP_ORDER[sp] < _SP_ORDER["SP3"]
    row: KnownBuild | None = None
    recognised = False
    if sp is not None and build is not None:
        if rev is not None:
            row = _by_version().get((major, minor, build, rev))
            recognised = row is not None
        else:
            # No revision known (AdminDisplayVersion-like "8.1.240"): match the build number alone.
            matches = [r for r in known_builds() if r.version[:3] == (major, minor, build)]
            recognised = bool(matches)
            row = matches[-1] if len(matches) == 1 else None
    release = release_build(minor) if sp is not None else None
    rollup_range = bool(recognised and release is not None and build is not None
                        and (build, rev or 0) > release.version[2:])
    return BuildInfo(
        build=".".join(parts),
        major=major,
        minor=minor,
        build_number=build,
        revision=rev,
        service_pack=sp,
        recognised=recognised,
        below_sp3=below,
        rollup_range=rollup_range,
        rollup=row.rollup if row is not None else None,
    )


def parse_build(text: str | None) -> BuildInfo | None:
    """Parse "8.1.240.6", padded "08.01.0240.006" or "Version 8.3 (Build 83.6)"; None for garbage.

    service_pack follows the minor version whenever major is 8 and minor is 0..3, even
    when the build is not in Microsoft's table (then recognised is False):
    8.3.600.0 -> SP3, unrecognised. Other majors (7.x, 14.x) have no service pack here.
    """
    if text is None or not isinstance(text, str) or len(text) > 200:
        return None
    m = _ADMIN.match(text)
    if m:
        a, b, c, d = (int(g) for g in m.groups())
        return _make(a, b, c, d)
    m = _DOTTED.match(text)
    if not m:
        lead = _LEADING_DOTTED.match(text)
        if not lead:
            return None
        m = _DOTTED.match(lead.group(1))
        if not m:
            return None
    major, minor = int(m.group(1)), int(m.group(2))
    build = int(m.group(3)) if m.group(3) is not None else None
    rev = int(m.group(4)) if m.group(4) is not None else None
    return _make(major, minor, build, rev)


def build_from_registry(
    product_major: object, product_minor: object, build_major: object, build_minor: object
) -> str | None:
    """The build string from the Setup key's MsiProductMajor/Minor and MsiBuildMajor/Minor
    values ("8", "1", "240", "6" -> "8.1.240.6"); None when any is missing or not a number."""
    parts: list[int] = []
    for value in (product_major, product_minor, build_major, build_minor):
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip()
            if not text.isascii() or not text.isdigit() or len(text) > 9:
                return None
            number = int(text)
        if number < 0:
            return None
        parts.append(number)
    return ".".join(str(p) for p in parts)


_ROLLUP_NAME = re.compile(
    r"\bUpdate\s+Rollup\s+(\d{1,3})\s+for\s+(?:Microsoft\s+)?Exchange\s+Server\s+2007"
    r"(?:\s+Service\s+Pack\s+(\d))?\b",
    re.IGNORECASE | re.ASCII,
)


def rollup_from_names(names: Iterable[str], service_pack: str | None) -> str | None:
    """The highest "Update Rollup N for Exchange Server 2007 [Service Pack K]" among the
    Patches DisplayNames for the current service pack, as "RU<N>"; None if none matches.

    A name without "Service Pack" is an RTM rollup. Rollups of earlier service packs stay
    listed after an upgrade and are ignored.
    """
    if service_pack not in _SP_ORDER:
        return None
    best: int | None = None
    for name in names:
        if not isinstance(name, str):
            continue
        m = _ROLLUP_NAME.search(name)
        if not m:
            continue
        sp = f"SP{m.group(2)}" if m.group(2) else "RTM"
        if sp != service_pack:
            continue
        number = int(m.group(1))
        if best is None or number > best:
            best = number
    return None if best is None else f"RU{best}"


#: Outcomes of rollup_check: the JSON report's "build_check" values.
BuildCheck = Literal["agrees", "disagrees", "not-in-table", "no-build"]
BUILD_CHECKS: tuple[BuildCheck, ...] = get_args(BuildCheck)


def _rollup_number(rollup: str | None) -> str | None:
    """"RU3-v2" -> "3": the Patches DisplayName carries the number, not the re-release."""
    return None if rollup is None else rollup.removeprefix("RU").split("-", 1)[0]


def rollup_check(build: str | None, rollup_listed: str | None) -> BuildCheck:
    """Compare the rollup the build names with the one the registry's Patches list names.

    "agrees": the build is in the table and names the same rollup (or none, with none
    listed); "disagrees": it names another; "not-in-table": an Exchange 2007 build that
    Microsoft's table does not list (or not Exchange 2007 at all); "no-build": nothing to
    compare.
    """
    info = parse_build(build)
    if info is None:
        return "no-build"
    if not info.recognised or info.revision is None:
        return "not-in-table"
    return "agrees" if _rollup_number(info.rollup) == _rollup_number(rollup_listed) else "disagrees"
