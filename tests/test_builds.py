"""Exchange 2007 builds, service packs and rollups."""

from __future__ import annotations

import pytest

from scanner.parse.builds import (
    BuildInfo,
    build_from_registry,
    known_builds,
    parse_build,
    rollup_check,
    rollup_from_names,
)


@pytest.mark.parametrize(
    ("text", "sp", "recognised", "rollup_range"),
    [
        # RTM: 8.0.685.25, rollups 8.0.708.3 .. 8.0.813.0; 685.24 is not in Microsoft's table
        ("8.0.685.24", "RTM", False, False),
        ("8.0.685.25", "RTM", True, False),
        ("8.0.685.23", "RTM", False, False),
        ("8.0.708.3", "RTM", True, True),
        ("8.0.813.0", "RTM", True, True),
        ("8.0.813.1", "RTM", False, False),
        # SP1: 8.1.240.6, rollups 8.1.263.1 .. 8.1.436.0
        ("8.1.240.6", "SP1", True, False),
        ("8.1.240.5", "SP1", False, False),
        ("8.1.263.1", "SP1", True, True),
        ("8.1.436.0", "SP1", True, True),
        ("8.1.436.1", "SP1", False, False),
        ("8.1.300.0", "SP1", False, False),  # between two rollups, but no build Microsoft lists
        # SP2: 8.2.176.2, rollups 8.2.217.3 .. 8.2.305.3
        ("8.2.176.2", "SP2", True, False),
        ("8.2.176.1", "SP2", False, False),
        ("8.2.217.3", "SP2", True, True),
        ("8.2.305.3", "SP2", True, True),
        ("8.2.305.4", "SP2", False, False),
        # SP3: 8.3.83.6, rollups 8.3.106.2 .. 8.3.517.0 (RU23)
        ("8.3.83.6", "SP3", True, False),
        ("8.3.83.5", "SP3", False, False),
        ("8.3.106.2", "SP3", True, True),
        ("8.3.517.0", "SP3", True, True),
        ("8.3.517.1", "SP3", False, False),
        ("8.3.600.0", "SP3", False, False),
        # not Exchange 2007 service pack levels
        ("8.4.10.0", None, False, False),
        ("14.3.123.4", None, False, False),
        ("7.0.0.0", None, False, False),
    ],
)
def test_levels_and_boundaries(text: str, sp: str | None, recognised: bool, rollup_range: bool) -> None:
    info = parse_build(text)
    assert info is not None
    assert (info.service_pack, info.recognised, info.rollup_range) == (sp, recognised, rollup_range)
    assert info.build == text


@pytest.mark.parametrize(("text", "below"), [("8.0.685.24", True), ("8.1.240.6", True), ("8.2.217.3", True),
                                             ("8.3.83.6", False), ("8.3.600.0", False), ("14.3.123.4", False)])
def test_below_sp3(text: str, below: bool) -> None:
    info = parse_build(text)
    assert info is not None and info.below_sp3 is below


def test_padded_exsetup_file_version_is_normalised() -> None:
    assert parse_build("08.01.0240.006") == BuildInfo(
        build="8.1.240.6", major=8, minor=1, build_number=240, revision=6,
        service_pack="SP1", recognised=True, below_sp3=True, rollup_range=False,
    )
    info = parse_build(" 08.03.0517.000 ")
    assert info is not None and (info.build, info.rollup_range) == ("8.3.517.0", True)


def test_file_version_with_trailing_comment() -> None:
    info = parse_build("08.03.0083.006 (Build 083.006)")
    assert info is not None and info.build == "8.3.83.6" and info.service_pack == "SP3"


@pytest.mark.parametrize(
    ("text", "build", "sp"),
    [
        ("Version 8.3 (Build 83.6)", "8.3.83.6", "SP3"),
        ("Version 8.1 (Build 240.6)", "8.1.240.6", "SP1"),
        ("version 8.0 (build 685.24)", "8.0.685.24", "RTM"),
        ("Version 14.3 (Build 123.4)", "14.3.123.4", None),
    ],
)
def test_admin_display_version(text: str, build: str, sp: str | None) -> None:
    info = parse_build(text)
    assert info is not None and (info.build, info.service_pack) == (build, sp)


def test_short_forms() -> None:
    info = parse_build("8.3")
    assert info is not None
    assert (info.build, info.service_pack, info.recognised, info.build_number) == ("8.3", "SP3", False, None)


@pytest.mark.parametrize(
    "text",
    [None, "", "   ", "garbage", "8", "8.x.240.6", "8.1.240.6.1", "8..240.6", "-8.1.240.6", "Version 8.3",
     "8.1.240.6; rm -rf /", "1" * 500, "８.１.２４０.６"],
)
def test_garbage_is_none(text: str | None) -> None:
    assert parse_build(text) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (("8", "1", "240", "6"), "8.1.240.6"),
        ((8, 3, 83, 6), "8.3.83.6"),
        ((" 8", "3", "0517", "0"), "8.3.517.0"),
        (("8", "1", "", "6"), None),
        (("8", "1", None, "6"), None),
        (("8", "1", "240", "x"), None),
        (("8", "1", "-240", "6"), None),
        ((True, 1, 240, 6), None),
    ],
)
def test_build_from_registry(values: tuple[object, ...], expected: str | None) -> None:
    assert build_from_registry(*values) == expected


def test_registry_build_round_trips_through_parse_build() -> None:
    text = build_from_registry("8", "2", "217", "3")
    info = parse_build(text)
    assert info is not None and (info.service_pack, info.rollup_range) == ("SP2", True)


PATCHES = [
    "Update Rollup 5 for Exchange Server 2007 Service Pack 1",
    "Update Rollup 10 for Exchange Server 2007 Service Pack 1",
    "Update Rollup 2 for Exchange Server 2007 Service Pack 3",
    "Update Rollup 10 for Exchange Server 2007 Service Pack 3",
    "Update Rollup 9 for Exchange Server 2007 Service Pack 3",
    "Update Rollup 7 for Exchange Server 2007",
    "Security Update for Exchange Server 2007 Service Pack 3 (KB2706690)",
]


@pytest.mark.parametrize(
    ("sp", "expected"),
    [("SP3", "RU10"), ("SP1", "RU10"), ("RTM", "RU7"), ("SP2", None), (None, None), ("SP9", None)],
)
def test_rollup_for_current_service_pack_only(sp: str | None, expected: str | None) -> None:
    assert rollup_from_names(PATCHES, sp) == expected


def test_rollup_numbers_compare_numerically_not_as_text() -> None:
    names = ["Update Rollup 9 for Exchange Server 2007 Service Pack 3",
             "Update Rollup 23 for Exchange Server 2007 Service Pack 3"]
    assert rollup_from_names(names, "SP3") == "RU23"
    assert rollup_from_names(reversed(names), "SP3") == "RU23"


def test_rollup_ignores_other_products_and_junk() -> None:
    names = ["Update Rollup 4 for Exchange Server 2010 Service Pack 3", "", "Update Rollup x", 5]
    assert rollup_from_names(names, "SP3") is None  # type: ignore[list-item]
    assert rollup_from_names([], "SP3") is None


def test_the_table_is_microsofts_list_of_52_builds() -> None:
    table = known_builds()
    assert len(table) == 52
    assert [r.build for r in table if r.rollup is None] == ["8.0.685.25", "8.1.240.6", "8.2.176.2", "8.3.83.6"]
    assert len({r.version for r in table}) == 52
    last = table[-1]
    assert (last.service_pack, last.rollup, last.build, last.released) == ("SP3", "RU23", "8.3.517.0", "2017-03-21")


def test_the_build_alone_names_every_rollup_of_the_table() -> None:
    for row in known_builds():
        info = parse_build(row.build)
        assert info is not None and info.recognised
        assert (info.service_pack, info.rollup) == (row.service_pack, row.rollup)
        assert info.rollup_range is (row.rollup is not None)


@pytest.mark.parametrize(
    ("build", "rollup"),
    [("8.3.517.0", "RU23"), ("8.3.83.6", None), ("8.1.436.0", "RU10"), ("8.3.159.0", "RU3-v1"),
     ("8.3.159.2", "RU3-v2"), ("8.3.279.6", "RU8-v3"), ("08.03.0298.003", "RU10"), ("8.0.813.0", "RU7"),
     ("8.3.600.0", None), ("8.3.83", None)],
)
def test_rollup_from_the_build(build: str, rollup: str | None) -> None:
    info = parse_build(build)
    assert info is not None and info.rollup == rollup


@pytest.mark.parametrize(
    ("build", "listed", "check"),
    [
        ("8.3.517.0", "RU23", "agrees"),
        ("8.3.83.6", None, "agrees"),          # the release build, no rollup listed
        ("8.3.159.2", "RU3", "agrees"),        # RU3 v2: the DisplayName carries only the number
        ("8.3.298.3", "RU9", "disagrees"),     # build of RU10, Patches list stops at RU9
        ("8.3.83.6", "RU10", "disagrees"),     # rollup listed, ExSetup still the release build
        ("8.3.517.0", None, "disagrees"),
        ("8.3.600.0", "RU23", "not-in-table"),
        ("8.0.685.24", None, "not-in-table"),
        ("8.3.83", None, "not-in-table"),      # no revision: cannot be matched to one row
        ("14.3.123.4", None, "not-in-table"),
        (None, "RU10", "no-build"),
        ("garbage", None, "no-build"),
    ],
)
def test_the_patches_list_is_a_second_opinion(build: str | None, listed: str | None, check: str) -> None:
    assert rollup_check(build, listed) == check
