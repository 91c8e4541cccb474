"""Effective AllowCrossSiteSessions of one Exchange 2007 POP3/IMAP4 .exe.config file.

The file is read the way the .NET 2.0/3.5 configuration system reads an application
config file for `ConfigurationManager.AppSettings[...]` (System.Configuration's
BaseConfigurationRecord, AppSettingsSection, KeyValueConfigurationCollection and the
NameValueCollection it hands out), and the value goes through `Boolean.TryParse`.
How the Exchange binaries themselves fetch the value is unconfirmed; ConfigurationManager
.AppSettings is assumed (docs/exchange-facts.md).

What .NET would refuse (the service gets an exception instead of a value) is reported
as status "malformed" with the value unknown, with one sentence saying why:
- not well-formed XML, a DOCTYPE (refused here outright), an empty file;
- a root that is not `configuration`, an `xmlns` other than the .NET 2.0 config
  namespace, other attributes on the root, text or processing instructions between
  sections (these are init errors: "Configuration system failed to initialize");
- a top-level element that is no section declared by machine.config (.NET 2.0/3.0/3.5)
  or by this file's <configSections> ("Unrecognized configuration section"); children of
  the section groups system.net, system.transactions and system.xml.serialization are
  checked too, other groups' children are not;
- a section present twice (appSettings included; <location path="."> counts as this
  file), except the ignorable sections such as <runtime>;
- misplaced or repeated <configSections>, a bad <location> (unknown attribute, bad
  path, nested);
- in appSettings: an element other than add/remove/clear, an unknown attribute (names
  are case-sensitive), a missing key, text or CDATA content, a bad lockItem, an
  `xmlns` declaration, or `configSource` with other attributes or content.

<location path="other"> applies to no .exe and is ignored. Line numbers are lxml's.
Known divergence: .NET's XmlTextReader does not check character references, so it
accepts `&#0;` where libxml2 (and so this module) reports "malformed".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from scanner.util import testhooks
from scanner.util.xmlsafe import MAX_XML_BYTES, UntrustedXMLError, parse_untrusted

KEY = "AllowCrossSiteSessions"
NET_CONFIG_NAMESPACE = "http://schemas.microsoft.com/.NetConfiguration/v2.0"

# String.WhitespaceChars of .NET 2.0-3.5 (what String.Trim(char[]) gets from
# Boolean.TryParse), plus the NUL that TryParse adds.
_NET2_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u200b\u3000\ufeff"
)
_BOOL_TRIM = _NET2_WHITESPACE + "\x00"

# Code points that culture-sensitive comparison (InvariantCultureIgnoreCase, used by
# the NameValueCollection behind ConfigurationManager.AppSettings) skips. An
# approximation of the NLS tables: the commonly ignorable format characters.
_NLS_IGNORABLE = frozenset("\x00\xad\u200b\u200c\u200d\u200e\u200f\u2060\ufeff")

# machine.config of .NET 2.0 with 3.0/3.5 installed (CLR 2.0, which Exchange 2007 runs on).
_MACHINE_SECTIONS = frozenset(
    {
        "appSettings", "connectionStrings", "configProtectedData", "mscorlib", "runtime",
        "assemblyBinding", "satelliteassemblies", "startup", "system.codedom", "system.data",
        "system.data.dataset", "system.data.odbc", "system.data.oledb",
        "system.data.oracleclient", "system.data.sqlclient", "system.diagnostics",
        "system.runtime.remoting", "system.webServer", "windows", "uri",
    }
)
# Sections of type IgnoreSection: their content is never read, duplicates are allowed.
_IGNORABLE_SECTIONS = frozenset(
    {"mscorlib", "runtime", "assemblyBinding", "satelliteassemblies", "startup", "system.webServer"}
)
# Section groups; None = children not checked here.
_MACHINE_GROUPS: dict[str, frozenset[str] | None] = {
    "system.net": frozenset(
        {
            "authenticationModules", "connectionManagement", "defaultProxy", "mailSettings",
            "requestCaching", "settings", "webRequestModules",
        }
    ),
    "system.net/mailSettings": frozenset({"smtp"}),
    "system.transactions": frozenset({"defaultSettings", "machineSettings"}),
    "system.xml.serialization": frozenset(
        {"schemaImporterExtensions", "dateTimeSerialization", "xmlSerializer"}
    ),
    "system.web": None,
    "system.runtime.serialization": None,
    "system.serviceModel": None,
    "system.serviceModel.activation": None,
}

_LOCK_ATTRIBUTES = frozenset(
    {"lockAttributes", "lockAllAttributesExcept", "lockElements", "lockAllElementsExcept"}
)
_MAX_NAME_IN_NOTE = 120


@dataclass(frozen=True)
class KeyEntry:
    """One appSettings operation that touched AllowCrossSiteSessions (or a <clear/>)."""

    op: str  # "add" | "remove" | "clear"
    key: str | None  # as written (any letter case)
    value: str | None  # value attribute as written ("" for an add without one)
    line: int | None


@dataclass(frozen=True)
class ConfigReading:
    """What the service would get for AllowCrossSiteSessions from one config file."""

    status: str  # ok | missing | malformed | invalid-value | unreadable
    value: bool | None  # the effective value; None = unknown
    value_source: str  # "default": no entry in force, false applies; "file" otherwise (also when unknown)
    raw_value: str | None  # value string of the entry in force
    encoding: str | None  # utf-8, utf-8-sig, utf-16-le, utf-16-be, utf-32-le, ... or declared
    entries: tuple[KeyEntry, ...] = ()
    notes: tuple[str, ...] = ()  # XS-007 evidence: "duplicate: ...", "removed: ...", ...
    detail: str = ""  # one sentence for a non-ok status, or for an unknown value


class _Refused(Exception):
    """.NET would not hand out appSettings for this file."""


def parse_dotnet_bool(text: str | None) -> bool | None:
    """Boolean.TryParse of .NET 2.0: "true"/"false" in any letter case, surrounding
    white space (String.WhitespaceChars) and NUL trimmed; None when not a boolean."""
    if text is None or not isinstance(text, str):
        return None
    trimmed = text.strip(_BOOL_TRIM)
    # OrdinalIgnoreCase against ASCII literals: only ASCII letters may match.
    if trimmed.isascii():
        lowered = trimmed.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    return None


def value_text(value: bool | None) -> str | None:
    """An effective value as the config file spells it: "true" / "false"; None when unknown."""
    return None if value is None else ("true" if value else "false")


def _ordinal_ignore_case(key: str) -> str:
    """StringComparer.OrdinalIgnoreCase as a key: per-character simple upper case."""
    out = []
    for ch in key:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


def _culture_ignore_case(key: str) -> str:
    """StringComparer.InvariantCultureIgnoreCase, approximated as a key: ignorable code
    points dropped, per-character simple lower case."""
    out = []
    for ch in key:
        if ch in _NLS_IGNORABLE:
            continue
        low = ch.lower()
        out.append(low if len(low) == 1 else ch)
    return "".join(out)


_KEY_ORDINAL = _ordinal_ignore_case(KEY)
_KEY_CULTURE = _culture_ignore_case(KEY)


def _touches_key(key: str | None) -> bool:
    if key is None:
        return False
    return _ordinal_ignore_case(key) == _KEY_ORDINAL or _culture_ignore_case(key) == _KEY_CULTURE


def _sniff_encoding(data: bytes) -> str:
    """The encoding an XML parser picks: BOM first, then the declaration, else UTF-8."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if data.startswith(b"\xff\xfe\x00\x00"):
        return "utf-32-le"
    if data.startswith(b"\x00\x00\xfe\xff"):
        return "utf-32-be"
    if data.startswith(b"\xff\xfe"):
        return "utf-16-le"
    if data.startswith(b"\xfe\xff"):
        return "utf-16-be"
    if data.startswith(b"<\x00?\x00"):
        return "utf-16-le"
    if data.startswith(b"\x00<\x00?"):
        return "utf-16-be"
    m = re.match(rb"<\?xml[^>]{0,200}?\bencoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]{0,39})[\"']", data)
    if m:
        return m.group(1).decode("ascii").lower()
    return "utf-8"


def _printable(text: str, limit: int = _MAX_NAME_IN_NOTE) -> str:
    """Untrusted text made safe for a note: control characters escaped, length capped."""
    cleaned = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def _qname(el: etree._Element) -> str:
    """The element name as .NET's XmlReader.Name gives it: prefix:local, namespace ignored."""
    local = etree.QName(el).localname
    return f"{el.prefix}:{local}" if el.prefix else local


def _attr_name(name: str, el: etree._Element) -> str:
    """An attribute name as XmlReader.Name gives it."""
    if not name.startswith("{"):
        return name
    uri, local = name[1:].split("}", 1)
    for prefix, ns in el.nsmap.items():
        if ns == uri and prefix:
            return f"{prefix}:{local}"
    return local


def _attributes(el: etree._Element) -> dict[str, str]:
    return {_attr_name(k, el): v for k, v in el.attrib.items()}


def _new_ns_declarations(el: etree._Element) -> list[str]:
    """xmlns attributes written on this element (lxml keeps them out of attrib)."""
    parent = el.getparent()
    inherited = parent.nsmap if parent is not None else {}
    found = []
    for prefix, uri in el.nsmap.items():
        if prefix == "xml":
            continue
        if prefix not in inherited or inherited[prefix] != uri:
            found.append("xmlns" if prefix is None else f"xmlns:{prefix}")
    return found


def _is_blank(text: str | None) -> bool:
    return text is None or text.strip(" \t\r\n") == ""


def _check_only_elements_and_comments(el: etree._Element, where: str) -> None:
    """Between sections .NET allows elements, comments and white space only."""
    if not _is_blank(el.text):
        raise _Refused(f"text content inside <{where}>")
    for child in el:
        if not _is_blank(child.tail):
            raise _Refused(f"text content inside <{where}>")
        if isinstance(child, etree._ProcessingInstruction):
            raise _Refused(f"a processing instruction inside <{where}>")
        if isinstance(child, etree._Entity):
            raise _Refused(f"an entity reference inside <{where}>")


def _elements(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


@dataclass
class _Scan:
    declared_sections: set[str] = field(default_factory=set)
    declared_groups: dict[str, set[str]] = field(default_factory=dict)  # group -> declared children
    sections: dict[str, list[etree._Element]] = field(default_factory=dict)


def _scan_config_sections(el: etree._Element, scan: _Scan, group: str) -> None:
    """Record the sections and section groups declared in <configSections>."""
    _check_only_elements_and_comments(el, "configSections")
    for child in _elements(el):
        kind = _qname(child)
        attrs = _attributes(child)
        if kind not in ("section", "sectionGroup", "remove", "clear"):
            raise _Refused(f"<configSections> holds an unknown element <{_printable(kind)}>")
        if kind == "clear":
            continue
        decl = attrs.get("name")
        if not decl:
            raise _Refused(f"a <{kind}> in <configSections> has no name")
        if kind == "remove":
            continue
        full = f"{group}/{decl}" if group else decl
        if group:
            scan.declared_groups.setdefault(group, set()).add(decl)
        if kind == "section":
            if "type" not in attrs:
                raise _Refused(f"section {_printable(full)!r} is declared without a type")
            if full in _MACHINE_SECTIONS or full in _MACHINE_GROUPS or full in scan.declared_sections:
                raise _Refused(f"section {_printable(full)!r} is already declared")
            scan.declared_sections.add(full)
        else:
            if full in _MACHINE_SECTIONS or full in scan.declared_sections:
                raise _Refused(f"section group {_printable(full)!r} clashes with a section")
            scan.declared_groups.setdefault(full, set())
            _scan_config_sections(child, scan, full)


def _is_group(path: str, scan: _Scan) -> bool:
    return path in _MACHINE_GROUPS or path in scan.declared_groups


def _is_section(path: str, scan: _Scan) -> bool:
    return path in _MACHINE_SECTIONS or path in scan.declared_sections


def _group_allows(group: str, child: str, scan: _Scan) -> bool:
    if group in _MACHINE_GROUPS and _MACHINE_GROUPS[group] is None:
        return True  # a machine.config group whose children are not checked here
    machine = _MACHINE_GROUPS.get(group) or frozenset()
    return child in machine or child in scan.declared_groups.get(group, set())


def _scan_child(child: etree._Element, scan: _Scan, group: str, in_location: bool, applies: bool) -> None:
    """One element below <configuration>, a <location> or a section group."""
    name = _qname(child)
    if name == "configSections":
        raise _Refused("<configSections> must be the first element of <configuration>, once")
    if name == "location":
        if group or in_location:
            raise _Refused("<location> is nested")
        loc_applies = _scan_location_attributes(child)
        _check_only_elements_and_comments(child, "location")
        for grandchild in _elements(child):
            _scan_child(grandchild, scan, "", True, loc_applies)
        return
    path = f"{group}/{name}" if group else name
    if group and not _group_allows(group, name, scan):
        raise _Refused(f"unrecognized configuration section {_printable(path)!r}")
    if _is_group(path, scan):
        _check_only_elements_and_comments(child, path)
        for grandchild in _elements(child):
            _scan_child(grandchild, scan, path, in_location, applies)
        return
    # inside a group, _group_allows has already checked the name against its declarations
    if not group and not _is_section(path, scan):
        raise _Refused(
            f"unrecognized configuration section {_printable(path)!r} (declared neither in "
            "this file nor in machine.config)"
        )
    if not applies:
        return
    seen = scan.sections.setdefault(path, [])
    seen.append(child)
    if len(seen) > 1 and path not in _IGNORABLE_SECTIONS:
        raise _Refused(f"section <{_printable(path)}> appears more than once (sections must be unique)")


def _location_path_bad(path: str) -> bool:
    if path.strip(_NET2_WHITESPACE) != path:
        return True
    return path[0] in "\\./" or path[-1] in "\\./"


def _scan_location_attributes(el: etree._Element) -> bool:
    """Validate a <location>; True when its sections apply to this .exe (no path, "" or ".")."""
    if _new_ns_declarations(el):
        raise _Refused("<location> carries an unrecognized xmlns attribute")
    attrs = _attributes(el)
    override_seen = False
    for name, value in attrs.items():
        if name == "path":
            continue
        if name in ("allowOverride", "overrideMode"):
            if override_seen:
                raise _Refused("<location> has both allowOverride and overrideMode")
            override_seen = True
            allowed = ("true", "false") if name == "allowOverride" else ("Inherit", "Allow", "Deny")
            if value not in allowed:
                raise _Refused(f"<location> {name}={_printable(value)!r} is not valid")
        elif name == "inheritInChildApplications":
            if value not in ("true", "false"):
                raise _Refused(f"<location> {name}={_printable(value)!r} is not a boolean")
        else:
            raise _Refused(f"<location> has an unrecognized attribute {_printable(name)!r}")
    path = attrs.get("path")
    if path is None or path in ("", "."):
        return True
    if _location_path_bad(path):
        raise _Refused(f"<location> path {_printable(path)!r} is not valid")
    return False


def _scan_root(root: etree._Element) -> _Scan:
    """Check the file as .NET's configuration record does and collect its sections."""
    if _qname(root) != "configuration":
        raise _Refused(f"the root element is <{_printable(_qname(root))}>, not <configuration>")
    for prefix, uri in root.nsmap.items():
        if prefix is None and uri != NET_CONFIG_NAMESPACE:
            raise _Refused(f"the configuration namespace {_printable(uri)!r} is not the .NET one")
        if prefix is not None and prefix != "xml":
            raise _Refused(f"<configuration> has an unrecognized attribute 'xmlns:{_printable(prefix)}'")
    if root.attrib:
        first = _attr_name(next(iter(root.attrib)), root)
        raise _Refused(f"<configuration> has an unrecognized attribute {_printable(first)!r}")
    _check_only_elements_and_comments(root, "configuration")
    scan = _Scan()
    children = _elements(root)
    if children and _qname(children[0]) == "configSections":
        first_child = children.pop(0)
        if first_child.attrib or _new_ns_declarations(first_child):
            raise _Refused("<configSections> has an unrecognized attribute")
        _scan_config_sections(first_child, scan, "")
    for child in children:
        _scan_child(child, scan, "", False, True)
    return scan


@dataclass
class _Settings:
    entries: list[KeyEntry] = field(default_factory=list)
    # OrdinalIgnoreCase key -> (key as written, value) in collection order
    collection: dict[str, tuple[str, str]] = field(default_factory=dict)
    adds: int = 0
    removes: list[int | None] = field(default_factory=list)
    clears_hitting_key: list[int | None] = field(default_factory=list)
    clears: list[int | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    redirect: str = ""  # configSource / protection: value comes from elsewhere


def _check_lock_item(value: str, where: str) -> None:
    if parse_dotnet_bool(value) is None:
        raise _Refused(f"lockItem={_printable(value)!r} on <{where}> is not a boolean")


def _read_app_settings(section: etree._Element) -> _Settings:
    """Apply the add/remove/clear operations of one <appSettings> in document order."""
    out = _Settings()
    if _new_ns_declarations(section):
        raise _Refused("<appSettings> carries an unrecognized xmlns attribute")
    attrs = _attributes(section)
    if "configSource" in attrs:
        source = attrs["configSource"]
        if len(attrs) != 1:
            raise _Refused("<appSettings configSource=...> may carry no other attribute")
        if not _is_blank(section.text) or any(
            not isinstance(c, etree._Comment) or not _is_blank(c.tail) for c in section
        ):
            raise _Refused("<appSettings configSource=...> may contain nothing but comments")
        if not source or source.startswith(("\\", "/")) or re.match(r"^[A-Za-z]:", source):
            raise _Refused(f"configSource {_printable(source)!r} is not a relative file name")
        out.notes.append(f"configSource={_printable(source)}")
        out.redirect = (
            f"appSettings comes from {_printable(source)!r} (configSource), which was not collected"
        )
        return out
    if "configProtectionProvider" in attrs:
        provider = attrs["configProtectionProvider"]
        if len(attrs) != 1:
            raise _Refused("<appSettings configProtectionProvider=...> may carry no other attribute")
        out.notes.append(f"configProtectionProvider={_printable(provider)}")
        out.redirect = f"appSettings is encrypted with the {_printable(provider)!r} provider"
        return out
    for name, value in attrs.items():
        if name == "file":
            if value:
                out.notes.append(f"file={_printable(value)}")
        elif name == "lockItem":
            _check_lock_item(value, "appSettings")
        elif name not in _LOCK_ATTRIBUTES:
            raise _Refused(f"<appSettings> has an unrecognized attribute {_printable(name)!r}")
    if not _is_blank(section.text):
        raise _Refused("<appSettings> contains text")
    for child in section:
        if not _is_blank(child.tail):
            raise _Refused("<appSettings> contains text")
        if not isinstance(child.tag, str):
            if isinstance(child, etree._Entity):
                raise _Refused("<appSettings> contains an entity reference")
            continue  # comments and processing instructions are skipped by .NET
        name = _qname(child)
        if _new_ns_declarations(child):
            raise _Refused(f"<{_printable(name)}> in <appSettings> carries an xmlns attribute")
        if len(child) or not _is_blank(child.text):
            if any(isinstance(c.tag, str) for c in child):
                raise _Refused(f"<{_printable(name)}> in <appSettings> contains an element")
            if not _is_blank(child.text) or any(not _is_blank(c.tail) for c in child):
                raise _Refused(f"<{_printable(name)}> in <appSettings> contains text")
        child_attrs = _attributes(child)
        line = child.sourceline
        if name == "clear":
            if child_attrs:
                raise _Refused("<clear> in <appSettings> takes no attributes")
            if any(_touches_key(k) for k, _ in out.collection.values()):
                out.clears_hitting_key.append(line)
            out.clears.append(line)
            out.collection.clear()
            out.entries.append(KeyEntry("clear", None, None, line))
            continue
        if name not in ("add", "remove"):
            raise _Refused(f"<appSettings> holds an unrecognized element <{_printable(name)}>")
        allowed = {"key", "value"} if name == "add" else {"key"}
        for attr, value in child_attrs.items():
            if attr == "lockItem":
                _check_lock_item(value, name)
            elif attr not in allowed and attr not in _LOCK_ATTRIBUTES:
                raise _Refused(f"<{name}> in <appSettings> has an unrecognized attribute {_printable(attr)!r}")
        key = child_attrs.get("key")
        if key is None:
            raise _Refused(f"an <{name}> in <appSettings> has no key attribute")
        ordinal = _ordinal_ignore_case(key)
        if name == "add":
            value = child_attrs.get("value", "")
            out.collection[ordinal] = (key, value)  # later add replaces, position kept
            if _touches_key(key):
                out.adds += 1
                out.entries.append(KeyEntry("add", key, value, line))
        else:
            out.collection.pop(ordinal, None)
            if _touches_key(key):
                out.removes.append(line)
                out.entries.append(KeyEntry("remove", key, None, line))
    return out


def _lines(lines: list[int | None]) -> str:
    shown = [str(n) for n in lines if n is not None]
    return "line " + ", ".join(shown) if shown else "line unknown"


def _evaluate(root: etree._Element, encoding: str) -> ConfigReading:
    testhooks.fail_at("config")
    try:
        scan = _scan_root(root)
        sections = scan.sections.get("appSettings", [])
        settings = _read_app_settings(sections[0]) if sections else _Settings()
    except _Refused as refused:
        return _reading("malformed", encoding=encoding, detail=f".NET refuses this file: {refused}.")
    notes: list[str] = []
    if settings.adds > 1:
        notes.append(f"duplicate: key set {settings.adds} times")
    if settings.removes:
        notes.append(f"removed: {_lines(settings.removes)}")
    has_key_op = any(e.op != "clear" for e in settings.entries)
    if settings.clears and has_key_op:
        notes.append(f"cleared: {_lines(settings.clears_hitting_key or settings.clears)}")
    notes.extend(settings.notes)
    entries = tuple(settings.entries)
    if settings.redirect:
        return ConfigReading(
            status="ok", value=None, value_source="file", raw_value=None, encoding=encoding,
            entries=entries, notes=tuple(notes),
            detail=f"The value is unknown: {settings.redirect}.",
        )
    # ConfigurationManager.AppSettings is a NameValueCollection built from the collection
    # (InvariantCultureIgnoreCase): keys equal under it are merged, values joined by ",".
    in_force = [
        (key, value) for key, value in settings.collection.values() if _culture_ignore_case(key) == _KEY_CULTURE
    ]
    if not in_force:
        return ConfigReading(
            status="ok", value=False, value_source="default", raw_value=None, encoding=encoding,
            entries=entries, notes=tuple(notes), detail="",
        )
    raw = ",".join(value for _, value in in_force)
    parsed = parse_dotnet_bool(raw)
    if parsed is None:
        why = (
            f"the joined value of {len(in_force)} keys that .NET treats as one name"
            if len(in_force) > 1
            else "the value"
        )
        return ConfigReading(
            status="invalid-value", value=None, value_source="file", raw_value=raw, encoding=encoding,
            entries=entries, notes=tuple(notes),
            detail=f"{KEY}: {why}, {_printable(raw, 60)!r}, is not a boolean; how Exchange treats it is unconfirmed.",
        )
    file_note = next((n for n in notes if n.startswith("file=")), None)
    detail = (
        f"Entries in {file_note[5:]!r} (file=) override this value when that file exists; it was not collected."
        if file_note
        else ""
    )
    return ConfigReading(
        status="ok", value=parsed, value_source="file", raw_value=raw, encoding=encoding,
        entries=entries, notes=tuple(notes), detail=detail,
    )


def _reading(status: str, *, encoding: str | None = None, detail: str = "") -> ConfigReading:
    """A reading whose value is unknown. value_source is "file": the file (its absence,
    its damage) decides, and "default" would claim the default false is in force."""
    return ConfigReading(
        status=status, value=None, value_source="file", raw_value=None, encoding=encoding,
        entries=(), notes=(), detail=detail,
    )


def read_config(content: bytes | None, *, exists: bool = True, error: str = "") -> ConfigReading:
    """The effective AllowCrossSiteSessions of one collected config file. Raises only for
    a bug of its own (what a file can do is a status, never an exception).

    A missing file gives status "missing" with the value unknown (None): .NET itself
    would run on defaults without an .exe.config, but Exchange ships the file, so its
    absence means something is wrong and how the service binary behaves then is
    unconfirmed. A collector error or no content gives "unreadable", as does content
    over 1 MiB ("too large"). Everything .NET would refuse gives "malformed" (see the
    module docstring); a value that is not a boolean gives "invalid-value".
    """
    if not exists:
        return _reading("missing", detail="The config file does not exist.")
    if error:
        if error.strip().lower() in ("too-large", "too large"):
            return _reading("unreadable", detail="The config file is too large to be a real one (collector refused it).")
        return _reading("unreadable", detail=f"The collector could not read the file: {_printable(error, 200)}.")
    if content is None:
        return _reading("unreadable", detail="The collector returned no content for the file.")
    try:
        data = bytes(content)
    except (TypeError, ValueError):
        return _reading("unreadable", detail="The collected content is not bytes.")
    if len(data) > MAX_XML_BYTES:
        return _reading(
            "unreadable", detail=f"The config file is too large ({len(data)} bytes, limit {MAX_XML_BYTES})."
        )
    encoding = _sniff_encoding(data)
    try:
        root = parse_untrusted(data, max_bytes=MAX_XML_BYTES, forbid_doctype=True)
    except UntrustedXMLError as exc:
        return _reading("malformed", encoding=encoding, detail=f"The file is not usable XML: {_printable(exc.reason, 240)}.")
    # No catch-all: an exception here is a bug of ours, not a property of the file. It
    # reaches the scan as an internal error (exit 4, traceback in the error log), never
    # an XS-006 "malformed" finding.
    return _evaluate(root, encoding)
