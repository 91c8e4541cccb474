"""One <appSettings> element read as .NET 2.0's AppSettingsSection and
KeyValueConfigurationCollection read it: its attributes (configSource, file,
configProtectionProvider, locks) and its add/remove/clear entries in document order.

The same code reads the section in the config file, the root of a `file=` target and
the root of a `configSource=` target, so the entries of a referenced file follow
exactly the rules of the main file. Everything .NET refuses raises `Refused`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from scanner.parse.dotnet import (
    Refused,
    attributes,
    is_blank,
    new_ns_declarations,
    ordinal_ignore_case,
    parse_dotnet_bool,
    printable,
    qname,
    touches_key,
)

SECTION = "appSettings"
_LOCK_ATTRIBUTES = frozenset(
    {"lockAttributes", "lockAllAttributesExcept", "lockElements", "lockAllElementsExcept"}
)


@dataclass(frozen=True)
class KeyEntry:
    """One appSettings operation that touched AllowCrossSiteSessions (or a <clear/>)."""

    op: str  # "add" | "remove" | "clear"
    key: str | None  # as written (any letter case)
    value: str | None  # value attribute as written ("" for an add without one)
    line: int | None  # line in the file that holds it
    file: str = ""  # "" = the config file itself; else the file=/configSource= value naming its file


@dataclass(frozen=True)
class SectionHead:
    """What the attributes of one <appSettings> say about where its entries come from."""

    config_source: str | None  # configSource as written; None when absent
    protection: str | None  # configProtectionProvider; None when absent
    file: str  # file= as written; "" when absent or empty (.NET ignores an empty one)
    line: int | None


@dataclass
class Settings:
    """The collection as it stands after the entries read so far."""

    entries: list[KeyEntry] = field(default_factory=list)
    # OrdinalIgnoreCase key -> (key as written, value, the entry that put it there or None)
    collection: dict[str, tuple[str, str, KeyEntry | None]] = field(default_factory=dict)
    adds: int = 0
    removes: list[int | None] = field(default_factory=list)
    clears_hitting_key: list[int | None] = field(default_factory=list)
    clears: list[int | None] = field(default_factory=list)


def _check_lock_item(value: str, where: str) -> None:
    if parse_dotnet_bool(value) is None:
        raise Refused(f"lockItem={printable(value)!r} on <{where}> is not a boolean")


def read_head(section: etree._Element) -> SectionHead:
    """The attributes of an <appSettings> element, checked as .NET checks them."""
    if new_ns_declarations(section):
        raise Refused("<appSettings> carries an unrecognized xmlns attribute")
    attrs = attributes(section)
    line = section.sourceline
    if "configSource" in attrs:
        if len(attrs) != 1:
            raise Refused("<appSettings configSource=...> may carry no other attribute")
        if not is_blank(section.text) or any(
            not isinstance(c, etree._Comment) or not is_blank(c.tail) for c in section
        ):
            raise Refused("<appSettings configSource=...> may contain nothing but comments")
        return SectionHead(config_source=attrs["configSource"], protection=None, file="", line=line)
    if "configProtectionProvider" in attrs:
        if len(attrs) != 1:
            raise Refused("<appSettings configProtectionProvider=...> may carry no other attribute")
        return SectionHead(config_source=None, protection=attrs["configProtectionProvider"], file="", line=line)
    for name, value in attrs.items():
        if name == "lockItem":
            _check_lock_item(value, "appSettings")
        elif name != "file" and name not in _LOCK_ATTRIBUTES:
            raise Refused(f"<appSettings> has an unrecognized attribute {printable(name)!r}")
    return SectionHead(config_source=None, protection=None, file=attrs.get("file", ""), line=line)


def apply_entries(section: etree._Element, out: Settings, file: str = "") -> None:
    """Apply the add/remove/clear children of one <appSettings> to `out`, in document order."""
    if not is_blank(section.text):
        raise Refused("<appSettings> contains text")
    for child in section:
        if not is_blank(child.tail):
            raise Refused("<appSettings> contains text")
        if not isinstance(child.tag, str):
            if isinstance(child, etree._Entity):
                raise Refused("<appSettings> contains an entity reference")
            continue  # comments and processing instructions are skipped by .NET
        name = qname(child)
        if new_ns_declarations(child):
            raise Refused(f"<{printable(name)}> in <appSettings> carries an xmlns attribute")
        if len(child) or not is_blank(child.text):
            if any(isinstance(c.tag, str) for c in child):
                raise Refused(f"<{printable(name)}> in <appSettings> contains an element")
            if not is_blank(child.text) or any(not is_blank(c.tail) for c in child):
                raise Refused(f"<{printable(name)}> in <appSettings> contains text")
        child_attrs = attributes(child)
        line = child.sourceline
        if name == "clear":
            if child_attrs:
                raise Refused("<clear> in <appSettings> takes no attributes")
            if any(touches_key(k) for k, _v, _e in out.collection.values()):
                out.clears_hitting_key.append(line)
            out.clears.append(line)
            out.collection.clear()
            out.entries.append(KeyEntry("clear", None, None, line, file))
            continue
        if name not in ("add", "remove"):
            raise Refused(f"<appSettings> holds an unrecognized element <{printable(name)}>")
        allowed = {"key", "value"} if name == "add" else {"key"}
        for attr, value in child_attrs.items():
            if attr == "lockItem":
                _check_lock_item(value, name)
            elif attr not in allowed and attr not in _LOCK_ATTRIBUTES:
                raise Refused(f"<{name}> in <appSettings> has an unrecognized attribute {printable(attr)!r}")
        key = child_attrs.get("key")
        if key is None:
            raise Refused(f"an <{name}> in <appSettings> has no key attribute")
        ordinal = ordinal_ignore_case(key)
        if name == "add":
            value = child_attrs.get("value", "")
            entry = KeyEntry("add", key, value, line, file) if touches_key(key) else None
            out.collection[ordinal] = (key, value, entry)  # later add replaces, position kept
            if entry is not None:
                out.adds += 1
                out.entries.append(entry)
        else:
            out.collection.pop(ordinal, None)
            if touches_key(key):
                out.removes.append(line)
                out.entries.append(KeyEntry("remove", key, None, line, file))


def check_referenced_root(root: etree._Element, attribute: str) -> None:
    """The document shape .NET requires of a file=/configSource= target: the root element
    is <appSettings> (XmlReader.Name, so no prefix), and only comments follow it
    (AppSettingsSection.DeserializeElement; Config_source_file_format). A file= target's
    root carries no attribute at all (Config_base_unrecognized_attribute)."""
    name = qname(root)
    if name != SECTION:
        raise Refused(f"the {attribute}= file's root element is <{printable(name)}>, not <appSettings>")
    for sibling in root.itersiblings():
        if not isinstance(sibling, etree._Comment):
            raise Refused(f"the {attribute}= file holds more than the <appSettings> element")
    if attribute == "file" and (root.attrib or new_ns_declarations(root)):
        raise Refused("the root of the file= file carries an attribute, which .NET refuses")
