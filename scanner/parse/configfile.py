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

appSettings `file=` (AppSettingsSection.DeserializeElement): the named file, relative to
the config file's folder, is read after the section and its add/remove/clear entries
apply on top; a file that does not exist is ignored, one .NET cannot read (not XML, a
root other than <appSettings>, attributes on that root, more than comments after it) is a
configuration error. `configSource=` replaces the section with the named file; the name
must pass NormalizeConfigSource and stay in the config file's folder, and a missing file
is an error. A referenced file the collector did not read leaves the value unknown.

<location path="other"> applies to no .exe and is ignored. Line numbers are lxml's.
Known divergence: .NET's XmlTextReader does not check character references, so it
accepts `&#0;` where libxml2 (and so this module) reports "malformed".
"""

from __future__ import annotations

import ntpath
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from lxml import etree

from scanner.collect.collected import CollectedReference
from scanner.facts import ConfigStatus, ReferenceOutcome, ValueSource
from scanner.parse.appsettings import (
    KeyEntry,
    SectionHead,
    Settings,
    apply_entries,
    check_referenced_root,
    read_head,
)
from scanner.parse.configscan import NET_CONFIG_NAMESPACE, scan_root
from scanner.parse.dotnet import (
    KEY,
    KEY_CULTURE,
    NET2_WHITESPACE,
    Refused,
    culture_ignore_case,
    parse_dotnet_bool,
    printable,
    sniff_encoding,
    value_text,
)
from scanner.util import testhooks
from scanner.util.xmlsafe import MAX_XML_BYTES, UntrustedXMLError, parse_untrusted

__all__ = [
    "KEY",
    "NET_CONFIG_NAMESPACE",
    "ConfigReading",
    "KeyEntry",
    "Reference",
    "parse_dotnet_bool",
    "read_config",
    "value_text",
]

_COLLECTOR_FOLDER_NOTE = "the collector reads referenced files only from the PopImap folder itself"


@dataclass(frozen=True)
class Reference:
    """The file= or configSource= of the <appSettings> in force, and what became of it."""

    attribute: str  # "file" | "configSource"
    value: str  # as written
    line: int | None  # line of the <appSettings> element that names it
    # applied: its entries were read; absent: a file= target that does not exist (.NET
    # ignores it); unknown: not read (reason in ConfigReading.detail); refused: .NET refuses it
    outcome: ReferenceOutcome
    path: str = ""  # the full path the collector resolved; "" when not fetched


@dataclass(frozen=True)
class ConfigReading:
    """What the service would get for AllowCrossSiteSessions from one config file."""

    status: ConfigStatus
    value: bool | None  # the effective value; None = unknown
    value_source: ValueSource  # "default": no entry in force, false applies; "file" otherwise (also when unknown)
    raw_value: str | None  # value string of the entry in force
    encoding: str | None  # utf-8, utf-8-sig, utf-16-le, utf-16-be, utf-32-le, ... or declared
    entries: tuple[KeyEntry, ...] = ()  # every operation on the key, main file then referenced file
    notes: tuple[str, ...] = ()  # XS-007 evidence: "duplicate: ...", "removed: ...", ...
    detail: str = ""  # one sentence for a non-ok status, or for an unknown value
    # What decided the value, for remediation: the <add> entries in force (more than one
    # when .NET joins keys it treats as one name; KeyEntry.file names their file), the
    # line of the <appSettings> element in force, and its file=/configSource= reference.
    decided_by: tuple[KeyEntry, ...] = ()
    section_line: int | None = None
    reference: Reference | None = None


@dataclass
class _Outcome:
    settings: Settings = field(default_factory=Settings)
    notes: list[str] = field(default_factory=list)
    reference: Reference | None = None
    unknown: str = ""  # why the value is unknown ("" when it is known)
    unknown_status: ConfigStatus = "unreadable"  # the status an unknown value gets
    section_line: int | None = None


def _is_path_rooted(path: str) -> bool:
    """System.IO.Path.IsPathRooted of .NET 2.0 (Windows): a leading separator or a drive."""
    return path.startswith(("\\", "/")) or (len(path) >= 2 and path[1] == ":")


def _check_config_source(source: str, folder: str) -> bool:
    """BaseConfigurationRecord.NormalizeConfigSource (.NET Framework: empty, surrounding
    white space, any '/', a rooted path) and InternalConfigHost.
    StaticGetStreamNameForConfigSource (the file must be in or under the config file's
    folder: '..' may not leave it). False when that cannot be told: the folder is
    unknown and a '..' climbs above it."""
    shown = printable(source)
    if not source or source.strip(NET2_WHITESPACE) != source:
        raise Refused(f"configSource {shown!r} is empty or has surrounding white space (Config_source_invalid_format)")
    if "/" in source:
        raise Refused(f"configSource {shown!r} contains '/' (Config_source_invalid_chars)")
    if _is_path_rooted(source):
        raise Refused(f"configSource {shown!r} is not a relative file name (Config_source_invalid_format)")
    outside = f"configSource {shown!r} is not in the config file's folder (Config_source_not_under_config_dir)"
    if folder:  # Path.GetFullPath of the combined path must stay in or under the folder
        full = ntpath.normpath(folder + "\\" + source)
        if not full.casefold().startswith(ntpath.normpath(folder).casefold().rstrip("\\") + "\\"):
            raise Refused(outside)
        return True
    depth = 0  # the folder is unknown: a '..' that climbs above it may or may not come back
    for part in source.split("\\")[:-1]:
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            return False
    return True


def _find(references: Sequence[CollectedReference] | None, attribute: str, value: str) -> CollectedReference | None:
    for ref in references or ():
        if ref.attribute == attribute and ref.value == value:
            return ref
    return None


def _not_read(ref: CollectedReference | None, attribute: str, value: str, references_error: str,
              searched: bool) -> str:
    """Why the target of a reference was not read: one clause."""
    target = f"{attribute}={printable(value)!r}"
    if ref is None:
        if references_error:
            return f"{target} names a file the collector could not look for ({printable(references_error, 160)})"
        if not searched:
            return f"{target} names a file this collector did not fetch"
        return f"{target} names a file the collector did not fetch"
    error = ref.error.strip()
    if error == "refused-path":
        return f"{target} names a file outside the PopImap folder ({_COLLECTOR_FOLDER_NOTE})"
    if error == "too-large":
        size = f"{ref.length} bytes" if ref.length is not None else "its size"
        return f"the {target} file is too large for the collector ({size}, limit {MAX_XML_BYTES} bytes)"
    if error:
        return f"the collector could not read the {target} file: {printable(error, 200)}"
    return f"the collector returned no content for the {target} file"


def _parse_target(ref: CollectedReference, attribute: str) -> etree._Element:
    """The root of a referenced file; Refused when .NET would refuse it."""
    data = ref.content if ref.content is not None else b""
    try:
        root = parse_untrusted(data, max_bytes=MAX_XML_BYTES, forbid_doctype=True)
    except UntrustedXMLError as exc:
        raise Refused(f"the {attribute}= file {printable(ref.value)!r} is not usable XML: {printable(exc.reason, 200)}") from None
    check_referenced_root(root, attribute)
    return root


def _apply_section(section: etree._Element, head: SectionHead, out: _Outcome,
                   references: Sequence[CollectedReference] | None, references_error: str, folder: str) -> None:
    searched = references is not None
    out.section_line = head.line
    if head.config_source is not None:
        source = head.config_source
        out.notes.append(f"configSource={printable(source)}")
        out.reference = Reference("configSource", source, head.line, "unknown")  # refused if .NET refuses it
        if not _check_config_source(source, folder):
            out.unknown = (f"configSource {printable(source)!r} climbs out of a folder whose name is not known, "
                           "so whether .NET accepts it cannot be told")
            return
        ref = _find(references, "configSource", source)
        if ref is None or ref.error or (ref.exists and ref.content is None):
            out.reference = Reference("configSource", source, head.line, "unknown", ref.path if ref else "")
            out.unknown = f"appSettings comes from a file that was not read: {_not_read(ref, 'configSource', source, references_error, searched)}"
            out.unknown_status = "unreadable"
            return
        if not ref.exists:
            out.reference = Reference("configSource", source, head.line, "unknown", ref.path)
            raise Refused(f"the configSource file {printable(source)!r} does not exist (Unable to open configSource file)")
        out.reference = Reference("configSource", source, head.line, "applied", ref.path)
        root = _parse_target(ref, "configSource")
        inner = read_head(root)
        if inner.config_source is not None or inner.protection is not None or inner.file:
            out.reference = Reference("configSource", source, head.line, "unknown", ref.path)
            out.unknown = (
                f"the configSource file {printable(source)!r} refers on to another file (file=, configSource= "
                "or encryption), which the collector does not follow"
            )
            out.unknown_status = "unreadable"
            return
        apply_entries(root, out.settings, file=source)
        return
    if head.protection is not None:
        out.notes.append(f"configProtectionProvider={printable(head.protection)}")
        out.unknown = f"appSettings is encrypted with the {printable(head.protection)!r} provider"
        out.unknown_status = "unreadable"
        return
    apply_entries(section, out.settings)
    if not head.file:
        return
    name = head.file
    ref = _find(references, "file", name)
    if ref is not None and not ref.error and not ref.exists:
        # AppSettingsSection.DeserializeElement: File.Exists false -> the file is ignored
        out.notes.append(f"file={printable(name)} (absent: ignored)")
        out.reference = Reference("file", name, head.line, "absent", ref.path)
        return
    out.notes.append(f"file={printable(name)}")
    if ref is None or ref.error or ref.content is None:
        out.reference = Reference("file", name, head.line, "unknown", ref.path if ref else "")
        out.unknown = (
            f"entries of the file= file override the config file, and that file was not read: "
            f"{_not_read(ref, 'file', name, references_error, searched)}"
        )
        out.unknown_status = "unreadable"
        return
    out.reference = Reference("file", name, head.line, "applied", ref.path)
    root = _parse_target(ref, "file")
    apply_entries(root, out.settings, file=name)


def _lines(lines: list[int | None]) -> str:
    shown = [str(n) for n in lines if n is not None]
    return "line " + ", ".join(shown) if shown else "line unknown"


def _evaluate(root: etree._Element, encoding: str, references: Sequence[CollectedReference] | None,
              references_error: str, folder: str) -> ConfigReading:
    testhooks.fail_at("config")
    out = _Outcome()
    try:
        scan = scan_root(root)
        sections = scan.sections.get("appSettings", [])
        if sections:
            _apply_section(sections[0], read_head(sections[0]), out, references, references_error, folder)
    except Refused as refused:
        return _reading("malformed", encoding=encoding, detail=f".NET refuses this file: {refused}.",
                        reference=_refused_reference(out.reference))
    settings = out.settings
    notes: list[str] = []
    if settings.adds > 1:
        notes.append(f"duplicate: key set {settings.adds} times")
    if settings.removes:
        notes.append(f"removed: {_lines(settings.removes)}")
    has_key_op = any(e.op != "clear" for e in settings.entries)
    if settings.clears and has_key_op:
        notes.append(f"cleared: {_lines(settings.clears_hitting_key or settings.clears)}")
    notes.extend(out.notes)
    base = ConfigReading(
        status="ok", value=None, value_source="file", raw_value=None, encoding=encoding,
        entries=tuple(settings.entries), notes=tuple(notes), section_line=out.section_line, reference=out.reference,
    )
    if out.unknown:
        return replace(base, status=out.unknown_status, detail=f"The value is unknown: {out.unknown}.")
    # ConfigurationManager.AppSettings is a NameValueCollection built from the collection
    # (InvariantCultureIgnoreCase): keys equal under it are merged, values joined by ",".
    in_force = [
        (key, value, entry) for key, value, entry in settings.collection.values()
        if culture_ignore_case(key) == KEY_CULTURE
    ]
    if not in_force:
        return replace(base, value=False, value_source="default")
    raw = ",".join(value for _k, value, _e in in_force)
    decided = tuple(entry for _k, _v, entry in in_force if entry is not None)
    parsed = parse_dotnet_bool(raw)
    if parsed is None:
        why = (
            f"the joined value of {len(in_force)} keys that .NET treats as one name"
            if len(in_force) > 1
            else "the value"
        )
        return replace(
            base, status="invalid-value", raw_value=raw, decided_by=decided,
            detail=f"{KEY}: {why}, {printable(raw, 60)!r}, is not a boolean; how Exchange treats it is unconfirmed.",
        )
    return replace(base, value=parsed, raw_value=raw, decided_by=decided)


def _refused_reference(ref: Reference | None) -> Reference | None:
    if ref is None:
        return None
    return Reference(ref.attribute, ref.value, ref.line, "refused", ref.path)


def _reading(status: ConfigStatus, *, encoding: str | None = None, detail: str = "",
             reference: Reference | None = None) -> ConfigReading:
    """A reading whose value is unknown. value_source is "file": the file (its absence,
    its damage) decides, and "default" would claim the default false is in force."""
    return ConfigReading(
        status=status, value=None, value_source="file", raw_value=None, encoding=encoding,
        entries=(), notes=(), detail=detail, reference=reference,
    )


def read_config(
    content: bytes | None,
    *,
    exists: bool = True,
    error: str = "",
    references: Sequence[CollectedReference] | None = None,
    references_error: str = "",
    config_path: str = "",
) -> ConfigReading:
    """The effective AllowCrossSiteSessions of one collected config file. Raises only for
    a bug of its own (what a file can do is a status, never an exception).

    A missing file gives status "missing" with the value unknown (None): .NET itself
    would run on defaults without an .exe.config, but Exchange ships the file, so its
    absence means something is wrong and how the service binary behaves then is
    unconfirmed. A collector error or no content gives "unreadable", as does content
    over 1 MiB ("too large"). Everything .NET would refuse gives "malformed" (see the
    module docstring); a value that is not a boolean gives "invalid-value".

    `references` are the files the collector fetched for the file's appSettings
    `file=`/`configSource=` attributes (None: it did not look; `references_error` says
    why it could not). A reference whose file was not read leaves the value unknown
    (status "unreadable"), never the config file's own value. `config_path` (the file's
    full path on the server) lets a configSource name climb out and back into its folder
    as .NET allows ("..\\PopImap\\x.config"); without it any climbing '..' is refused.
    """
    if not exists:
        return _reading("missing", detail="The config file does not exist.")
    if error:
        if error.strip().lower() in ("too-large", "too large"):
            return _reading("unreadable", detail="The config file is too large to be a real one (collector refused it).")
        return _reading("unreadable", detail=f"The collector could not read the file: {printable(error, 200)}.")
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
    encoding = sniff_encoding(data)
    try:
        root = parse_untrusted(data, max_bytes=MAX_XML_BYTES, forbid_doctype=True)
    except UntrustedXMLError as exc:
        return _reading("malformed", encoding=encoding, detail=f"The file is not usable XML: {printable(exc.reason, 240)}.")
    # No catch-all: an exception here is a bug of ours, not a property of the file. It
    # reaches the scan as an internal error (exit 4, traceback in the error log), never
    # an XS-006 "malformed" finding.
    folder = ntpath.dirname(config_path) if ntpath.isabs(config_path) else ""
    return _evaluate(root, encoding, references, references_error, folder)
