"""appSettings file= and configSource=: the referenced file applied as .NET 2.0 applies it
(AppSettingsSection.DeserializeElement, BaseConfigurationRecord.NormalizeConfigSource,
InternalConfigHost.StaticGetStreamNameForConfigSource), and an unknown value wherever the
referenced file was not read."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rules_fixtures import T0, inputs, proto, server

from scanner.collect.collected import CollectedReference
from scanner.judge.checks import CHECKS
from scanner.parse.configfile import KEY, ConfigReading, KeyEntry, read_config
from scanner.parse.observe import ReferenceObservation

SECTION_LINE = 3
CONFIG_PATH = "C:\\Exchange\\ClientAccess\\PopImap\\Microsoft.Exchange.Pop3.exe.Config"


def main(attrs: str, body: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<configuration>\n'
        f"  <appSettings{attrs}>{body}</appSettings>\n</configuration>\n"
    ).encode()


def add(value: str, key: str = KEY) -> str:
    return f'<add key="{key}" value="{value}"/>'


def ref(attribute: str, value: str, content: bytes | None = None, *, exists: bool = True,
        error: str = "") -> CollectedReference:
    return CollectedReference(
        attribute=attribute, value=value, path=f"C:\\Exchange\\ClientAccess\\PopImap\\{value}", exists=exists,
        length=len(content) if content is not None else None, modified=None, error=error,
        content=content if exists and not error else None,
    )


def target(body: str, attrs: str = "", after: str = "") -> bytes:
    return f'<?xml version="1.0"?>\n<appSettings{attrs}>{body}</appSettings>{after}'.encode()


def read(data: bytes, *refs: CollectedReference, searched: bool = True, error: str = "") -> ConfigReading:
    return read_config(data, references=tuple(refs) if searched else None, references_error=error)


# --- file= ---------------------------------------------------------------------------


def test_file_entries_override_the_section() -> None:
    reading = read(main(' file="extra.config"', add("false")), ref("file", "extra.config", target(add("true"))))
    assert (reading.status, reading.value, reading.raw_value) == ("ok", True, "true")
    assert reading.decided_by == (KeyEntry("add", KEY, "true", 2, "extra.config"),)
    assert reading.reference is not None
    assert (reading.reference.attribute, reading.reference.outcome, reading.reference.line) == (
        "file", "applied", SECTION_LINE)
    assert "file=extra.config" in reading.notes


@pytest.mark.parametrize(
    ("body", "value", "source"),
    [
        (f'<remove key="{KEY}"/>', False, "default"),
        ("<clear/>", False, "default"),
        (add("false", key=KEY.upper()), False, "file"),
        ("<!-- nothing -->", True, "file"),
    ],
)
def test_file_operations_apply_after_the_section(body: str, value: bool, source: str) -> None:
    reading = read(main(' file="x.config"', add("true")), ref("file", "x.config", target(body)))
    assert (reading.status, reading.value, reading.value_source) == ("ok", value, source)


def test_a_missing_file_target_is_ignored() -> None:
    reading = read(main(' file="x.config"', add("true")), ref("file", "x.config", exists=False))
    assert (reading.status, reading.value) == ("ok", True)
    assert reading.reference is not None and reading.reference.outcome == "absent"
    assert "file=x.config (absent: ignored)" in reading.notes
    assert reading.decided_by == (KeyEntry("add", KEY, "true", SECTION_LINE, ""),)


def test_an_empty_file_attribute_is_no_reference() -> None:
    reading = read(main(' file=""', add("true")))
    assert (reading.status, reading.value, reading.reference) == ("ok", True, None)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"<appSettings><add key=", "not usable XML"),
        (b"", "not usable XML"),
        (b'<configuration><appSettings/></configuration>', "root element is <configuration>"),
        (b'<x:appSettings xmlns:x="urn:x"/>', "root element is <x:appSettings>"),
        (target(add("true"), attrs=' file="y.config"'), "carries an attribute"),
        (target(add("true"), attrs=' xmlns="urn:x"'), "carries an attribute"),
        (target(add("true"), after="<?pi x?>"), "more than the <appSettings> element"),
        (target('<add key="k" value="v" extra="1"/>'), "unrecognized attribute 'extra'"),
        (target("<set/>"), "unrecognized element <set>"),
    ],
)
def test_a_file_target_that_net_refuses_is_malformed(content: bytes, fragment: str) -> None:
    reading = read(main(' file="x.config"', add("false")), ref("file", "x.config", content))
    assert (reading.status, reading.value) == ("malformed", None)
    assert fragment in reading.detail
    assert reading.reference is not None and reading.reference.outcome == "refused"


def test_comments_after_the_file_root_are_allowed() -> None:
    reading = read(main(' file="x.config"'), ref("file", "x.config", target(add("TRUE"), after="<!-- c -->\n")))
    assert (reading.status, reading.value) == ("ok", True)


@pytest.mark.parametrize(
    ("collected", "searched", "error", "fragment"),
    [
        (None, False, "", "this collector did not fetch"),
        (None, True, "", "the collector did not fetch"),
        (None, True, "Data at the root level is invalid. Line 1, position 1.", "could not look for"),
        (ref("file", "x.config", error="refused-path"), True, "", "outside the PopImap folder"),
        (ref("file", "x.config", error="too-large"), True, "", "too large for the collector"),
        (ref("file", "x.config", error="Access to the path 'C:\\x.config' is denied."), True, "", "is denied"),
    ],
)
def test_a_file_target_not_read_leaves_the_value_unknown(
    collected: CollectedReference | None, searched: bool, error: str, fragment: str
) -> None:
    refs = (collected,) if collected is not None else ()
    reading = read(main(' file="x.config"', add("false")), *refs, searched=searched, error=error)
    assert (reading.status, reading.value, reading.raw_value) == ("unreadable", None, None)
    assert fragment in reading.detail and "x.config" in reading.detail
    assert reading.detail.startswith("The value is unknown:")


def test_a_reference_is_matched_by_its_exact_value() -> None:
    # the collector fetched "X.config"; the section names "x.config": not the same reading
    reading = read(main(' file="x.config"', add("false")), ref("file", "X.config", target(add("true"))))
    assert (reading.status, reading.value) == ("unreadable", None)


# --- configSource= ---------------------------------------------------------------------


def test_config_source_replaces_the_section() -> None:
    reading = read(main(' configSource="cs.config"'), ref("configSource", "cs.config", target(add("true"))))
    assert (reading.status, reading.value) == ("ok", True)
    assert reading.decided_by == (KeyEntry("add", KEY, "true", 2, "cs.config"),)
    assert reading.reference is not None and reading.reference.outcome == "applied"


def test_config_source_target_without_the_key_gives_the_default() -> None:
    reading = read(main(' configSource="cs.config"'), ref("configSource", "cs.config", target("")))
    assert (reading.status, reading.value, reading.value_source) == ("ok", False, "default")


def test_a_missing_config_source_target_is_an_error() -> None:
    reading = read(main(' configSource="cs.config"'), ref("configSource", "cs.config", exists=False))
    assert (reading.status, reading.value) == ("malformed", None)
    assert "does not exist" in reading.detail and "cs.config" in reading.detail


def test_a_config_source_not_collected_is_unknown_with_the_file_named() -> None:
    reading = read(main(' configSource="cs.config"'), searched=False)
    assert (reading.status, reading.value) == ("unreadable", None)
    assert "'cs.config'" in reading.detail


@pytest.mark.parametrize(
    "source",
    ["", " cs.config", "cs.config ", "cs.config\u00a0", "sub/cs.config", "\\cs.config", "/cs.config",
     "C:cs.config", "C:\\PopImap\\cs.config", "\\\\server\\share\\cs.config", "..\\cs.config",
     "sub\\..\\..\\cs.config", "..\\Other\\cs.config", "sub\\.."],
)
def test_config_source_paths_net_refuses_are_malformed(source: str) -> None:
    collected = ref("configSource", source, target(add("true")))
    reading = read_config(main(f' configSource="{source}"'), references=(collected,), config_path=CONFIG_PATH)
    assert (reading.status, reading.value) == ("malformed", None)
    assert "configSource" in reading.detail


@pytest.mark.parametrize(
    "source",
    ["cs.config", "sub\\cs.config", "sub\\..\\cs.config", ".\\cs.config", "a b.config", "..\\PopImap\\cs.config",
     "..\\POPIMAP\\cs.config"],
)
def test_config_source_paths_net_accepts_are_followed(source: str) -> None:
    collected = ref("configSource", source, target(add("true")))
    reading = read_config(main(f' configSource="{source}"'), references=(collected,), config_path=CONFIG_PATH)
    assert (reading.status, reading.value) == ("ok", True)


def test_a_climbing_config_source_without_the_folder_is_unknown_not_malformed() -> None:
    source = "..\\PopImap\\cs.config"
    reading = read(main(f' configSource="{source}"'), ref("configSource", source, target(add("true"))))
    assert (reading.status, reading.value) == ("unreadable", None)
    assert "cannot be told" in reading.detail


@pytest.mark.parametrize(
    ("attrs", "fragment"),
    [(' file="more.config"', "refers on"), (' configSource="again.config"', "refers on")],
)
def test_a_config_source_target_that_refers_on_is_unknown(attrs: str, fragment: str) -> None:
    reading = read(main(' configSource="cs.config"'), ref("configSource", "cs.config", target("", attrs=attrs)))
    assert (reading.status, reading.value) == ("unreadable", None)
    assert fragment in reading.detail


def test_a_config_source_target_with_another_root_is_malformed() -> None:
    reading = read(main(' configSource="cs.config"'), ref("configSource", "cs.config", b"<connectionStrings/>"))
    assert (reading.status, reading.value) == ("malformed", None)


# --- properties ------------------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from([KEY, KEY.lower(), "Other"]), st.sampled_from(["true", "false"])),
        st.tuples(st.just("remove"), st.sampled_from([KEY, "Other"]), st.just("")),
        st.tuples(st.just("clear"), st.just(""), st.just("")),
    ),
    max_size=6,
)


def _xml(ops: list[tuple[str, str, str]]) -> str:
    out = []
    for op, key, value in ops:
        out.append("<clear/>" if op == "clear" else f'<{op} key="{key}"' + (f' value="{value}"/>' if op == "add" else "/>"))
    return "".join(out)


def _model(ops: list[tuple[str, str, str]]) -> bool:
    """The collection as a plain dictionary: OrdinalIgnoreCase keys, later wins."""
    state: dict[str, str] = {}
    for op, key, value in ops:
        if op == "clear":
            state.clear()
        elif op == "add":
            state[key.upper()] = value
        else:
            state.pop(key.upper(), None)
    return state.get(KEY.upper(), "false") == "true"


@settings(max_examples=150, deadline=None)
@given(main_ops=_OPS, file_ops=_OPS, outcome=st.sampled_from(["read", "absent", "refused-path", "uncollected"]))
def test_file_merge_matches_a_dictionary_model(
    main_ops: list[tuple[str, str, str]], file_ops: list[tuple[str, str, str]], outcome: str
) -> None:
    data = main(' file="f.config"', _xml(main_ops))
    refs = {
        "read": (ref("file", "f.config", target(_xml(file_ops))),),
        "absent": (ref("file", "f.config", exists=False),),
        "refused-path": (ref("file", "f.config", error="refused-path"),),
        "uncollected": (),
    }[outcome]
    reading = read(data, *refs)
    if outcome == "read":
        assert (reading.status, reading.value) == ("ok", _model(main_ops + file_ops))
    elif outcome == "absent":
        assert (reading.status, reading.value) == ("ok", _model(main_ops))
    else:
        assert (reading.status, reading.value) == ("unreadable", None)
    # never certain where it cannot be: an unknown value is never "ok", and says why
    assert (reading.value is None) == (reading.status != "ok")
    assert reading.value is not None or reading.detail
    # what decided the value is named, with its file
    if reading.value is True:
        assert reading.decided_by and reading.decided_by[-1].value == "true"


@pytest.mark.parametrize(
    ("data", "refs"),
    [
        (main(' configSource="sub/cs.config"'), ()),
        (main(' configSource="cs.config"'), (ref("configSource", "cs.config", exists=False),)),
        (main(' file="x.config"'), (ref("file", "x.config", b"<other/>"),)),
    ],
)
def test_a_refused_reference_is_named_in_the_reading(data: bytes, refs: tuple[CollectedReference, ...]) -> None:
    reading = read(data, *refs)
    assert reading.status == "malformed"
    assert reading.reference is not None and reading.reference.outcome == "refused"


def test_xs005_names_the_referenced_file_written_after_the_start() -> None:
    written = T0 - timedelta(days=1)
    ref = ReferenceObservation(attribute="file", value="extra.config", line=3, outcome="applied",
                               path="C:\\Exchange\\ClientAccess\\PopImap\\extra.config", sha256="0" * 64,
                               length=10, modified=written)
    p = replace(proto("pop3", True, pending=True), config_reference=ref)
    [finding] = CHECKS["XS-005"].run(inputs([server(pop3=p)]))
    assert finding.fields["config_file"] == "extra.config"
    assert finding.fields["config_modified"] == "2026-11-19T10:00:00Z"  # not the config file's older time
    assert finding.evidence["config_reference_modified"] == finding.fields["config_modified"]
