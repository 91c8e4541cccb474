"""The minimal edit of a config file (scanner/remedy/edit.py): property-tested over
generated files (white space, comments, duplicates, remove/clear, CRLF/LF, BOMs, UTF-16):
the parser reads the result as the target, and no byte outside the changed span moves."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.collect.collected import CollectedReference
from scanner.parse.configfile import read_config
from scanner.remedy.edit import EditRefused, minimal_edit

KEYS = ["AllowCrossSiteSessions", "allowcrosssitesessions", "ALLOWCROSSSITESESSIONS"]
VALUES = ["true", "false", "True", " FALSE ", "\ttrue", "yes", ""]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16-le"]


def _quote(value: str, q: str) -> str:
    return q + value.replace("&", "&amp;").replace("<", "&lt;").replace(q, "&quot;" if q == '"' else "&apos;") + q


@st.composite
def entry(draw: st.DrawFn) -> str:
    q = draw(st.sampled_from(['"', "'"]))
    pad = draw(st.sampled_from(["", " ", "  ", "\t", "\n      "]))
    eq = draw(st.sampled_from(["=", " = ", "=\t"]))
    kind = draw(st.sampled_from(["add", "add", "add-other", "remove", "remove-other", "clear", "comment", "no-value"]))
    key = draw(st.sampled_from(KEYS))
    if kind == "add":
        value = draw(st.sampled_from(VALUES))
        return f"<add{pad} key{eq}{_quote(key, q)}{pad} value{eq}{_quote(value, q)}{pad}/>"
    if kind == "no-value":
        return f"<add key{eq}{_quote(key, q)}{pad}/>"
    if kind == "add-other":
        return f'<add key={_quote("SomethingElse", q)} value={_quote("1", q)} />'
    if kind == "remove":
        return f"<remove key={_quote(key, q)}/>"
    if kind == "remove-other":
        return f"<remove key={_quote('Other', q)} />"
    if kind == "clear":
        return "<clear />"
    return "<!-- " + draw(st.sampled_from(["note", "value=\"true\"", "<add key='AllowCrossSiteSessions' value='true'/>"])) + " -->"


@st.composite
def config(draw: st.DrawFn) -> tuple[bytes, str]:
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    unit = draw(st.sampled_from(["  ", "    ", "\t", " "]))
    encoding = draw(st.sampled_from(ENCODINGS))
    lines: list[str] = []
    if draw(st.booleans()):
        declared = "utf-16" if encoding == "utf-16-le" else "utf-8"
        lines.append(f'<?xml version="1.0" encoding="{declared}"?>')
    if draw(st.booleans()):
        lines.append("<!-- Exchange 2007 -->")
    lines.append("<configuration>")
    if draw(st.booleans()):
        lines.append(f"{unit}<runtime>{eol}{unit}{unit}<gcServer enabled=\"true\" />{eol}{unit}</runtime>")
    shape = draw(st.sampled_from(["entries", "entries", "entries", "empty", "self-closing", "none", "inline"]))
    entries = draw(st.lists(entry(), max_size=6))
    if shape == "entries":
        lines.append(f"{unit}<appSettings>")
        lines.extend(f"{unit}{unit}{e}" for e in entries)
        lines.append(f"{unit}</appSettings>")
    elif shape == "empty":
        lines.append(f"{unit}<appSettings>{eol}{unit}</appSettings>")
    elif shape == "self-closing":
        lines.append(f"{unit}<appSettings />")
    elif shape == "inline":
        lines.append(f"{unit}<appSettings>" + "".join(entries) + "</appSettings>")
    if draw(st.booleans()):
        lines.append(f"{unit}<system.diagnostics>{eol}{unit}</system.diagnostics>")
    lines.append("</configuration>")
    text = eol.join(lines) + (eol if draw(st.booleans()) else "")
    data = text.encode("utf-16-le" if encoding == "utf-16-le" else "utf-8")
    bom = {"utf-8-sig": b"\xef\xbb\xbf", "utf-16-le": b"\xff\xfe"}.get(encoding, b"")
    return bom + data, encoding


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config(), st.booleans())
def test_edit_reads_as_the_target_and_touches_one_span(generated: tuple[bytes, str], target: bool) -> None:
    content, encoding = generated
    before = read_config(content)
    assert before.status in ("ok", "invalid-value"), before.detail
    edit = minimal_edit(content, target)
    after = read_config(edit.after)
    assert after.status == "ok" and after.value is target
    assert after.encoding == before.encoding
    # every byte outside the changed span is the same
    end_after = edit.start + len(edit.replacement)
    assert edit.after[: edit.start] == content[: edit.start]
    assert edit.after[end_after:] == content[edit.end:]
    if before.status == "ok" and before.value is target:
        assert edit.after == content
    elif before.decided_by:  # a value edit: one attribute of one line, nothing inserted elsewhere
        codec = "utf-16-le" if encoding == "utf-16-le" else "utf-8"
        assert edit.replacement.decode(codec) in ("true", "false", ' value="true"', ' value="false"',
                                                 " value='true'", " value='false'")
    else:  # one add inserted, or an appSettings with one add
        codec = "utf-16-le" if encoding == "utf-16-le" else "utf-8"
        inserted = edit.replacement.decode(codec)
        assert inserted.count("<add ") == 1 and content[edit.start:edit.end].decode(codec) in ("", "/>")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"<configuration><appSettings><add key='AllowCrossSiteSessions' value='true'/></appSettings>",
         "malformed"),
        (b"<configuration><appSettings configSource='a.config'/></configuration>", "not known"),
        (b"<configuration><foo/></configuration>", "malformed"),
        ('<?xml version="1.0" encoding="windows-1252"?><configuration><appSettings>'
         '<add key="AllowCrossSiteSessions" value="true"/></appSettings></configuration>'.encode("cp1252"),
         "encoding"),
        (b"<configuration><appSettings><add key='AllowCrossSiteSessions' value='true'/>"
         b"<add key='AllowCrossSiteSessions\xe2\x80\x8b' value='true'/></appSettings></configuration>",
         "treats as one name"),
    ],
)
def test_refused_with_the_reason(text: bytes, reason: str) -> None:
    with pytest.raises(EditRefused, match=reason):
        minimal_edit(text, False)


def _ref(attribute: str, value: str, content: bytes) -> CollectedReference:
    return CollectedReference(attribute=attribute, value=value, path="C:\\x\\" + value, exists=True,
                              content=content, length=len(content), error="", modified=None)


def test_a_value_from_a_file_target_is_refused() -> None:
    main = b"<configuration><appSettings file='extra.config'></appSettings></configuration>"
    extra = b"<appSettings><add key='AllowCrossSiteSessions' value='true'/></appSettings>"
    with pytest.raises(EditRefused, match="referenced file 'extra.config'"):
        minimal_edit(main, False, references=[_ref("file", "extra.config", extra)], config_path="C:\\x\\a.config")


def test_an_insert_a_file_target_overrides_is_refused_by_the_parser_check() -> None:
    """The file= target clears the key after the main file: an add inserted in the main
    file would not be in force, and the re-read says so."""
    main = b"<configuration><appSettings file='extra.config'></appSettings></configuration>"
    extra = b"<appSettings><clear/></appSettings>"
    with pytest.raises(EditRefused, match="would read false"):
        minimal_edit(main, True, references=[_ref("file", "extra.config", extra)], config_path="C:\\x\\a.config")


def test_a_value_edit_keeps_everything_else() -> None:
    text = ("\ufeff<?xml version=\"1.0\"?>\r\n<configuration>\r\n  <appSettings>\r\n"
            "    <add key=\"AllowCrossSiteSessions\" value='true' />\r\n  </appSettings>\r\n</configuration>\r\n")
    edit = minimal_edit(text.encode("utf-8"), False)
    assert edit.after.decode("utf-8") == text.replace("value='true'", "value='false'")


def test_an_insert_follows_the_file_s_indentation_and_line_end() -> None:
    text = "<configuration>\r\n\t<appSettings>\r\n\t\t<add key=\"Other\" value=\"1\"/>\r\n\t</appSettings>\r\n</configuration>"
    edit = minimal_edit(b"\xff\xfe" + text.encode("utf-16-le"), True)
    assert edit.after[:2] == b"\xff\xfe"
    assert edit.after[2:].decode("utf-16-le") == text.replace(
        '\t</appSettings>', '\t\t<add key="AllowCrossSiteSessions" value="true" />\r\n\t</appSettings>')


def test_no_appsettings_gets_one_before_the_end_of_configuration() -> None:
    text = "<configuration>\n  <runtime/>\n</configuration>\n"
    edit = minimal_edit(text.encode(), True)
    assert edit.after.decode() == text.replace(
        "</configuration>",
        '  <appSettings>\n    <add key="AllowCrossSiteSessions" value="true" />\n  </appSettings>\n</configuration>')


def test_a_one_line_appsettings_gets_the_add_on_that_line() -> None:
    text = '<configuration>\n  <appSettings><add key="Other" value="1"/></appSettings>\n</configuration>\n'
    edit = minimal_edit(text.encode(), True)
    assert edit.after.decode() == text.replace(
        "</appSettings>", '<add key="AllowCrossSiteSessions" value="true" /></appSettings>')
