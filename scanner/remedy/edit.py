"""The minimal edit of one .exe.config file that makes .NET read AllowCrossSiteSessions as
the target value, computed with the parser's own model (scanner/parse/configfile.py).

- The key is in force: only the `value` attribute of the `add` that decides it changes
  (its quotes kept; an `add` without `value` gets one after its `key`).
- The key is absent and the target is not .NET's default (false): one `add` line goes
  at the end of the <appSettings> in force, in the file's indentation and line ending;
  a self-closing <appSettings/> is opened for it; with no <appSettings> at all, one is
  inserted as the last element of <configuration>.
- Every other byte stays: the change is one span of the file's bytes, in the file's own
  encoding (UTF-8 with or without BOM, UTF-16 LE/BE).
- The parser must read the new bytes as the target value, or the edit is refused.
Refused, with one sentence: a value from a file=/configSource= target, a file .NET
refuses or that was not read, keys .NET joins into one name, an encoding not edited here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from scanner.collect.collected import CollectedReference
from scanner.parse.configfile import ConfigReading, read_config
from scanner.parse.configscan import scan_root
from scanner.parse.dotnet import KEY, Refused, printable, qname, value_text
from scanner.util.xmlsafe import MAX_XML_BYTES, UntrustedXMLError, parse_untrusted

_CODECS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "utf-16-le": "utf-16-le", "utf-16-be": "utf-16-be"}
_BOMS = {"utf-8-sig": b"\xef\xbb\xbf", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}


class EditRefused(Exception):
    """No safe minimal edit exists; str() is the reason (one sentence)."""


@dataclass(frozen=True)
class Edit:
    before: bytes
    after: bytes
    before_value: bool | None
    after_value: bool
    start: int  # byte offset of the changed span in `before`
    end: int  # end of that span in `before` (the span in `after` is start..start+len(new))
    replacement: bytes
    what: str  # one sentence: what changed

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def before_sha256(self) -> str:
        return hashlib.sha256(self.before).hexdigest()

    @property
    def after_sha256(self) -> str:
        return hashlib.sha256(self.after).hexdigest()


@dataclass(frozen=True)
class _Tag:
    name: str
    start: int  # index of '<'
    end: int  # index after '>'
    empty: bool  # self-closing
    attrs: dict[str, tuple[int, int, str]]  # name -> (value start, value end, quote)
    attr_end: dict[str, int]  # name -> index after its closing quote
    close: int = -1  # for a start tag: index of its end tag's '<' (-1 when empty)


_NAME = r"[^\s/>=]+"
_ATTR = re.compile(r"\s*(" + _NAME + r")\s*=\s*(\"[^\"]*\"|'[^']*')")


def _tags(text: str) -> list[_Tag]:
    """The start tags of `text` in document order, with their attribute spans and the
    position of their end tags (an XML tokenizer: comments, CDATA, PIs skipped)."""
    tags: list[_Tag] = []
    open_: list[int] = []
    i = 0
    n = len(text)
    while True:
        i = text.find("<", i)
        if i < 0:
            break
        if text.startswith("<!--", i):
            i = _after(text, "-->", i)
        elif text.startswith("<![CDATA[", i):
            i = _after(text, "]]>", i)
        elif text.startswith("<?", i) or text.startswith("<!", i):
            i = _after(text, ">", i)
        elif text.startswith("</", i):
            if not open_:
                raise EditRefused("the file's tags do not nest")
            k = open_.pop()
            tags[k] = _replace_close(tags[k], i)
            i = _after(text, ">", i)
        else:
            m = re.compile(_NAME).match(text, i + 1)
            if m is None:
                raise EditRefused("a tag of the file could not be read")
            j = m.end()
            attrs: dict[str, tuple[int, int, str]] = {}
            attr_end: dict[str, int] = {}
            while True:
                a = _ATTR.match(text, j)
                if a is None:
                    break
                vs = a.start(2)
                attrs[a.group(1)] = (vs + 1, a.end(2) - 1, text[vs])
                attr_end[a.group(1)] = a.end(2)
                j = a.end()
            rest = re.compile(r"\s*(/?)>").match(text, j)
            if rest is None or j >= n:
                raise EditRefused("a tag of the file could not be read")
            empty = rest.group(1) == "/"
            tags.append(_Tag(m.group(0), i, rest.end(), empty, attrs, attr_end))
            if not empty:
                open_.append(len(tags) - 1)
            i = rest.end()
    return tags


def _after(text: str, end: str, i: int) -> int:
    k = text.find(end, i)
    if k < 0:
        raise EditRefused("the file ends inside a comment, CDATA section or declaration")
    return k + len(end)


def _replace_close(tag: _Tag, close: int) -> _Tag:
    return _Tag(tag.name, tag.start, tag.end, tag.empty, tag.attrs, tag.attr_end, close)


def _line_start(text: str, i: int) -> int:
    return text.rfind("\n", 0, i) + 1


def _indent_at(text: str, i: int) -> str:
    """The white space between the start of the line holding `i` and `i` (or "" when
    something else precedes it on that line)."""
    head = text[_line_start(text, i):i]
    return head if head.strip(" \t") == "" else ""


def _eol(text: str) -> str:
    return "\r\n" if "\r\n" in text else ("\r" if "\r" in text and "\n" not in text else "\n")


def _unit(text: str) -> str:
    """One indentation step of the file: a tab if lines are indented with tabs, else the
    smallest indentation in spaces (2 when there is none)."""
    widths = [len(m.group(1)) for m in re.finditer(r"(?m)^( +)<", text)]
    if re.search(r"(?m)^\t+<", text) and not widths:
        return "\t"
    return " " * (min(widths) if widths else 2)


def _add_line(target: bool) -> str:
    return f'<add key="{KEY}" value="{value_text(target)}" />'


def _plan_text_edit(text: str, root: etree._Element, reading: ConfigReading, target: bool) -> tuple[int, int, str, str]:
    """(start, end, replacement, what) in `text` for the edit."""
    tags = _tags(text)
    elements = [el for el in root.iter() if isinstance(el.tag, str)]
    if len(tags) != len(elements) or any(t.name != qname(e) for t, e in zip(tags, elements, strict=True)):
        raise EditRefused("the file's tags could not be matched to its elements")
    index = {id(el): k for k, el in enumerate(elements)}
    if reading.decided_by:
        if len(reading.decided_by) > 1:
            raise EditRefused(
                f"{len(reading.decided_by)} keys that .NET treats as one name decide the value together; "
                "a one-attribute edit cannot make them one boolean")
        entry = reading.decided_by[0]
        if entry.file:
            raise EditRefused(f"the value comes from the referenced file {printable(entry.file)!r}, which is not edited here")
        scan = scan_root(root)
        section = scan.sections["appSettings"][0]
        matches = [el for el in section if isinstance(el.tag, str) and qname(el) == "add"
                   and el.sourceline == entry.line and el.get("key") == entry.key
                   and (el.get("value") or "") == (entry.value or "")]
        if not matches:
            raise EditRefused("the entry in force could not be found in the file")
        tag = tags[index[id(matches[-1])]]
        if "value" in tag.attrs:
            start, end, _quote = tag.attrs["value"]
            return start, end, value_text(target) or "", f"value of the add on line {entry.line} set to {value_text(target)}"
        key_end = tag.attr_end["key"]
        quote = tag.attrs["key"][2]
        return key_end, key_end, f" value={quote}{value_text(target)}{quote}", f"value added to the add on line {entry.line}"
    # the key is absent (or removed/cleared): one add at the end of the section in force
    scan = scan_root(root)
    sections = scan.sections.get("appSettings", [])
    eol = _eol(text)
    unit = _unit(text)
    if sections:
        tag = tags[index[id(sections[0])]]
        base = _indent_at(text, tag.start)
        if tag.empty:
            close = text.rfind("/", tag.start, tag.end)
            name = tag.name
            new = f">{eol}{base}{unit}{_add_line(target)}{eol}{base}</{name}>"
            return close, tag.end, new, f"the empty <{name}/> on line {sections[0].sourceline} opened for one add"
        children = [c for c in sections[0] if isinstance(c.tag, str)]
        if children and text.rfind("\n", tag.start, tag.close) < 0:  # one line: the add joins it
            return tag.close, tag.close, _add_line(target), "one add inserted in the one-line <appSettings>"
        inner = _indent_at(text, tags[index[id(children[-1])]].start) if children else base + unit
        head = text[_line_start(text, tag.close):tag.close]
        if head.strip(" \t") == "":  # the end tag on its own line: insert a line before it
            at = _line_start(text, tag.close)
            return at, at, f"{inner}{_add_line(target)}{eol}", f"one add inserted before line {text.count(chr(10), 0, at) + 1}"
        return tag.close, tag.close, f"{eol}{inner}{_add_line(target)}{eol}{base}", "one add inserted before </appSettings>"
    # no appSettings: one section as the last element of <configuration>
    conf = tags[0]
    if conf.empty:
        raise EditRefused("<configuration/> is empty; a new file would be needed")
    head = text[_line_start(text, conf.close):conf.close]
    base = _indent_at(text, conf.start) + unit
    block = f"{base}<appSettings>{eol}{base}{unit}{_add_line(target)}{eol}{base}</appSettings>{eol}"
    if head.strip(" \t") == "":
        at = _line_start(text, conf.close)
        return at, at, block, "an <appSettings> with one add inserted before </configuration>"
    return conf.close, conf.close, eol + block, "an <appSettings> with one add inserted before </configuration>"


def minimal_edit(
    content: bytes,
    target: bool,
    *,
    references: Sequence[CollectedReference] | None = None,
    references_error: str = "",
    config_path: str = "",
) -> Edit:
    """The minimal edit of `content` (a config file's bytes) after which .NET reads
    AllowCrossSiteSessions as `target`; EditRefused with the reason when there is none.
    An Edit whose before == after when the file already reads as `target`."""
    def read(data: bytes) -> ConfigReading:
        return read_config(data, references=references, references_error=references_error, config_path=config_path)

    reading = read(content)
    if reading.status == "malformed":
        raise EditRefused(f"the file is malformed: {reading.detail}")
    if reading.status not in ("ok", "invalid-value"):
        raise EditRefused(f"the value is not known ({reading.status}): {reading.detail}")
    ref = reading.reference
    if ref is not None and ref.attribute == "configSource":
        raise EditRefused(f"appSettings comes from the configSource file {printable(ref.value)!r}, which is not edited here")
    if reading.status == "ok" and reading.value == target:
        return Edit(content, content, reading.value, target, 0, 0, b"", "no change: the file already reads as the target")
    encoding = reading.encoding or "utf-8"
    codec = _CODECS.get(encoding)
    if codec is None:
        raise EditRefused(f"the file's encoding {printable(encoding)!r} is not one this tool edits")
    bom = _BOMS.get(encoding, b"")
    if encoding in ("utf-16-le", "utf-16-be") and not content.startswith(bom):
        bom = b""
    try:
        text = content[len(bom):].decode(codec)
        root = parse_untrusted(content, max_bytes=MAX_XML_BYTES, forbid_doctype=True)
        start, end, replacement, what = _plan_text_edit(text, root, reading, target)
    except (UnicodeDecodeError, UntrustedXMLError, Refused) as exc:
        raise EditRefused(f"the file could not be edited safely: {printable(str(exc), 200)}") from None
    b_start = len(bom) + len(text[:start].encode(codec))
    b_end = len(bom) + len(text[:end].encode(codec))
    new = replacement.encode(codec)
    after = content[:b_start] + new + content[b_end:]
    check = read(after)
    if check.status != "ok" or check.value is not target:
        raise EditRefused(
            f"after the edit .NET would read {value_text(check.value) or 'no value'} ({check.status}), "
            f"not {value_text(target)}, so the change is refused")
    return Edit(content, after, reading.value, target, b_start, b_end, new, what)
