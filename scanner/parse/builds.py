"""Exchange 2007 builds: parse version strings, name the service pack and rollup.

Exchange 2007 is version 8; the minor version is the service pack and rollups raise
only the build number (exchange-facts.md, "Version and service pack"). No per-rollup
build table is kept: a build is recognised when it lies between the service pack's
release build and its last documented rollup build.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# minor -> (service pack, release builds (build, revision), last documented rollup build)
_LEVELS: dict[int, tuple[str, tuple[tuple[int, int], ...], tuple[int, int]]] = {
    0: ("RTM", ((685, 24), (685, 25)), (813, 0)),
    1: ("SP1", ((240, 6),), (436, 0)),
    2: ("SP2", ((176, 2),), (305, 3)),
    3: ("SP3", ((83, 6),), (517, 0)),
}
_SP_ORDER = {"RTM": 0, "SP1": 1, "SP2": 2, "SP3": 3}


@dataclass(frozen=True)
class BuildInfo:
    """One Exchange build and what it means."""

    build: str  # normalised "8.1.240.6" (AdminDisplayVersion gives only "8.3.83" style: no revision)
    major: int | None
    minor: int | None
    build_number: int | None
    revision: int | None
    service_pack: str | None  # RTM | SP1 | SP2 | SP3 | None (not Exchange 2007 or minor unknown)
    recognised: bool  # Exchange 2007 build within the documented range of its service pack
    below_sp3: bool  # an Exchange 2007 level below SP3 (RTM, SP1, SP2)
    rollup_range: bool  # above the service pack's release build: a rollup is installed


_DOTTED = re.compile(r"^\s*(\d{1,9})\.(\d{1,9})(?:\.(\d{1,9}))?(?:\.(\d{1,9}))?\s*$", re.ASCII)
# "Version 8.3 (Build 83.6)": Get-ExchangeServer's AdminDisplayVersion; the "Build x.y"
# part is build_number.revision, and it never reflects an installed rollup.
_ADMIN = re.compile(
    r"^\s*Version\s+(\d{1,9})\.(\d{1,9})\s*\(\s*Build\s+(\d{1,9})\.(\d{1,9})\s*\)\s*$",
    re.IGNORECASE | re.ASCII,
)
# FileVersion strings sometimes carry a trailing comment: "08.01.0240.006 (Build ...)"
_LEADING_DOTTED = re.compile(r"^\s*(\d{1,9}(?:\.\d{1,9}){1,3})(?:\s+\S.*)?$", re.ASCII)


def _classify(major: int, minor: int, build: int | None, rev: int | None) -> tuple[str | None, bool, bool, bool]:
    """(service_pack, recognised, below_sp3, rollup_range) for a parsed version."""
    if major != 8 or minor not in _LEVELS:
        return None, False, False, False
    sp, releases, last_rollup = _LEVELS[minor]
    below = _SP_ORDER[sp] < _SP_ORDER["SP3"]
    if build is None:
        return sp, False, below, False
    key = (build, rev if rev is not None else 0)
    first_release = min(releases)
    if rev is None:
        # No revision known (AdminDisplayVersion-like "8.1.240"): judge by build number alone.
        recognised = first_release[0] <= build <= last_rollup[0]
        rollup = build > max(releases)[0] and recognised
        return sp, recognised, below, rollup
    recognised = first_release <= key <= last_rollup
    rollup = recognised and key > max(releases)
    return sp, recognised, below, rollup


def _make(major: int, minor: int, build: int | None, rev: int | None) -> BuildInfo:
    parts = [str(major), str(minor)] + [str(p) for p in (build, rev) if p is not None]
    sp, recognised, below, rollup = _classify(major, minor, build, rev)
    return BuildInfo(
        build=".".join(parts),
        major=major,
        minor=minor,
        build_number=build,
        revision=rev,
        service_pack=sp,
        recognised=recognised,
        below_sp3=below,
        rollup_range=rollup,
    )


def parse_build(text: str | None) -> BuildInfo | None:
    """Parse "8.1.240.6", padded "08.01.0240.006" or "Version 8.3 (Build 83.6)"; None for garbage.

    service_pack follows the minor version whenever major is 8 and minor is 0..3, even
    when the build lies outside the documented range (then recognised is False):
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
