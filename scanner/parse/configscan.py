"""The structure of an .exe.config file as .NET 2.0's configuration record checks it:
the root, <configSections>, section groups, <location> and which sections appear.
Everything .NET refuses raises `Refused`; the caller turns it into status "malformed"."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from scanner.parse.dotnet import (
    NET2_WHITESPACE,
    Refused,
    attr_name,
    attributes,
    check_only_elements_and_comments,
    elements,
    new_ns_declarations,
    printable,
    qname,
)

NET_CONFIG_NAMESPACE = "http://schemas.microsoft.com/.NetConfiguration/v2.0"

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


@dataclass
class Scan:
    declared_sections: set[str] = field(default_factory=set)
    declared_groups: dict[str, set[str]] = field(default_factory=dict)  # group -> declared children
    sections: dict[str, list[etree._Element]] = field(default_factory=dict)


def _scan_config_sections(el: etree._Element, scan: Scan, group: str) -> None:
    """Record the sections and section groups declared in <configSections>."""
    check_only_elements_and_comments(el, "configSections")
    for child in elements(el):
        kind = qname(child)
        attrs = attributes(child)
        if kind not in ("section", "sectionGroup", "remove", "clear"):
            raise Refused(f"<configSections> holds an unknown element <{printable(kind)}>")
        if kind == "clear":
            continue
        decl = attrs.get("name")
        if not decl:
            raise Refused(f"a <{kind}> in <configSections> has no name")
        if kind == "remove":
            continue
        full = f"{group}/{decl}" if group else decl
        if group:
            scan.declared_groups.setdefault(group, set()).add(decl)
        if kind == "section":
            if "type" not in attrs:
                raise Refused(f"section {printable(full)!r} is declared without a type")
            if full in _MACHINE_SECTIONS or full in _MACHINE_GROUPS or full in scan.declared_sections:
                raise Refused(f"section {printable(full)!r} is already declared")
            scan.declared_sections.add(full)
        else:
            if full in _MACHINE_SECTIONS or full in scan.declared_sections:
                raise Refused(f"section group {printable(full)!r} clashes with a section")
            scan.declared_groups.setdefault(full, set())
            _scan_config_sections(child, scan, full)


def _is_group(path: str, scan: Scan) -> bool:
    return path in _MACHINE_GROUPS or path in scan.declared_groups


def _is_section(path: str, scan: Scan) -> bool:
    return path in _MACHINE_SECTIONS or path in scan.declared_sections


def _group_allows(group: str, child: str, scan: Scan) -> bool:
    if group in _MACHINE_GROUPS and _MACHINE_GROUPS[group] is None:
        return True  # a machine.config group whose children are not checked here
    machine = _MACHINE_GROUPS.get(group) or frozenset()
    return child in machine or child in scan.declared_groups.get(group, set())


def _scan_child(child: etree._Element, scan: Scan, group: str, in_location: bool, applies: bool) -> None:
    """One element below <configuration>, a <location> or a section group."""
    name = qname(child)
    if name == "configSections":
        raise Refused("<configSections> must be the first element of <configuration>, once")
    if name == "location":
        if group or in_location:
            raise Refused("<location> is nested")
        loc_applies = _scan_location_attributes(child)
        check_only_elements_and_comments(child, "location")
        for grandchild in elements(child):
            _scan_child(grandchild, scan, "", True, loc_applies)
        return
    path = f"{group}/{name}" if group else name
    if group and not _group_allows(group, name, scan):
        raise Refused(f"unrecognized configuration section {printable(path)!r}")
    if _is_group(path, scan):
        check_only_elements_and_comments(child, path)
        for grandchild in elements(child):
            _scan_child(grandchild, scan, path, in_location, applies)
        return
    # inside a group, _group_allows has already checked the name against its declarations
    if not group and not _is_section(path, scan):
        raise Refused(
            f"unrecognized configuration section {printable(path)!r} (declared neither in "
            "this file nor in machine.config)"
        )
    if not applies:
        return
    seen = scan.sections.setdefault(path, [])
    seen.append(child)
    if len(seen) > 1 and path not in _IGNORABLE_SECTIONS:
        raise Refused(f"section <{printable(path)}> appears more than once (sections must be unique)")


def _location_path_bad(path: str) -> bool:
    if path.strip(NET2_WHITESPACE) != path:
        return True
    return path[0] in "\\./" or path[-1] in "\\./"


def _scan_location_attributes(el: etree._Element) -> bool:
    """Validate a <location>; True when its sections apply to this .exe (no path, "" or ".")."""
    if new_ns_declarations(el):
        raise Refused("<location> carries an unrecognized xmlns attribute")
    attrs = attributes(el)
    override_seen = False
    for name, value in attrs.items():
        if name == "path":
            continue
        if name in ("allowOverride", "overrideMode"):
            if override_seen:
                raise Refused("<location> has both allowOverride and overrideMode")
            override_seen = True
            allowed = ("true", "false") if name == "allowOverride" else ("Inherit", "Allow", "Deny")
            if value not in allowed:
                raise Refused(f"<location> {name}={printable(value)!r} is not valid")
        elif name == "inheritInChildApplications":
            if value not in ("true", "false"):
                raise Refused(f"<location> {name}={printable(value)!r} is not a boolean")
        else:
            raise Refused(f"<location> has an unrecognized attribute {printable(name)!r}")
    path = attrs.get("path")
    if path is None or path in ("", "."):
        return True
    if _location_path_bad(path):
        raise Refused(f"<location> path {printable(path)!r} is not valid")
    return False


def scan_root(root: etree._Element) -> Scan:
    """Check the file as .NET's configuration record does and collect its sections."""
    if qname(root) != "configuration":
        raise Refused(f"the root element is <{printable(qname(root))}>, not <configuration>")
    for prefix, uri in root.nsmap.items():
        if prefix is None and uri != NET_CONFIG_NAMESPACE:
            raise Refused(f"the configuration namespace {printable(uri)!r} is not the .NET one")
        if prefix is not None and prefix != "xml":
            raise Refused(f"<configuration> has an unrecognized attribute 'xmlns:{printable(prefix)}'")
    if root.attrib:
        first = attr_name(next(iter(root.attrib)), root)
        raise Refused(f"<configuration> has an unrecognized attribute {printable(first)!r}")
    check_only_elements_and_comments(root, "configuration")
    scan = Scan()
    children = elements(root)
    if children and qname(children[0]) == "configSections":
        first_child = children.pop(0)
        if first_child.attrib or new_ns_declarations(first_child):
            raise Refused("<configSections> has an unrecognized attribute")
        _scan_config_sections(first_child, scan, "")
    for child in children:
        _scan_child(child, scan, "", False, True)
    return scan
