"""The PopImap folder of a simulated CAS as collect.ps1's 'configrefs' stage reads it.

For each protocol's config file the collector loads the file with an XmlReader that
prohibits DTDs and resolves nothing, takes the `file=` and `configSource=` values of
every <appSettings> element (at most 4 per config file, first seen first) and reads the
file each one names, but only a plain name of a file in the config file's own folder,
1 MiB per file and 2 MiB for all of them (function R in collect.ps1). This module
answers the same from the fleet: the folder holds the two config files and
`[server.extra_files]`. What it models of Windows and .NET is cited in docs/lab.md.
"""

from __future__ import annotations

import base64
import ntpath
import re
from dataclasses import dataclass

from scanner.collect.collected import CONFIG_FILE_NAMES
from scanner.facts import PROTOCOLS
from scanner.lab.fleet_model import DEFAULT_MODIFIED, SimServer
from scanner.parse.dotnet import NET2_WHITESPACE, qname
from scanner.util.timefmt import iso_utc
from scanner.util.xmlsafe import UntrustedXMLError, parse_untrusted

#: collect.ps1 reads at most this many bytes of one referenced file, and of all together.
REF_FILE_CAP = 1_048_576
REF_BUDGET = 2_097_152
MAX_REFS = 4
#: The text of the XmlException .NET 2.0's XmlReader throws for a DOCTYPE when ProhibitDtd is set.
DTD_PROHIBITED = (
    "For security reasons DTD is prohibited in this XML document. To enable DTD processing set the "
    "ProhibitDtd property on XmlReaderSettings to false and pass the settings into XmlReader.Create method."
)
# What R in collect.ps1 refuses before it builds a path (its -match, case-insensitive).
_REFUSED = re.compile(r'[/:*?"<>|\x00-\x1f]|[. ]$|(^|\\)(con|prn|aux|nul|com[0-9]|lpt[0-9])(\.[^\\]*)?$',
                      re.IGNORECASE)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class _File:
    data: bytes
    modified: str


def _t(name: str, value: object) -> str:
    """T in collect.ps1 (X: control characters to '?', then SecurityElement.Escape)."""
    text = _CONTROL.sub("?", str(value))
    text = (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))
    return f' {name}="{text}"'


def _folder(server: SimServer) -> dict[str, tuple[str, _File]]:
    """The PopImap folder: casefolded name -> (name, file). Windows names are case-insensitive."""
    files: dict[str, tuple[str, _File]] = {}
    for protocol in PROTOCOLS:
        proto = server.protocols[protocol]
        if proto.config_bytes is not None:
            name = CONFIG_FILE_NAMES[protocol]
            files[name.casefold()] = (name, _File(proto.config_bytes, iso_utc(proto.modified) if proto.modified else ""))
    for name, data in server.extra_files.items():
        files[name.casefold()] = (name, _File(data, iso_utc(DEFAULT_MODIFIED)))
    return files


def _full_path(folder: str, value: str) -> str:
    """Path.GetFullPath(Path.Combine(folder, value)) for a value that is not rooted."""
    return ntpath.normpath(folder + "\\" + value)


def _ref(folder: str, files: dict[str, tuple[str, _File]], attribute: str, value: str, budget: list[int]) -> str:
    """R in collect.ps1: one <ref> element."""
    path = length = modified = error = content = ""
    exists = "false"
    rooted = value.startswith(("\\", "/")) or (len(value) > 1 and value[1] == ":")
    if not value or value.strip(NET2_WHITESPACE) != value or _REFUSED.search(value) or rooted:
        error = "refused-path"
    else:
        path = _full_path(folder, value)
        if ntpath.dirname(path).casefold() != folder.casefold():
            error, path = "refused-path", ""
    if not error and ntpath.basename(path).casefold() in files:
        exists = "true"
        found = files[ntpath.basename(path).casefold()][1]
        length, modified = str(len(found.data)), found.modified
        if len(found.data) > REF_FILE_CAP or len(found.data) > budget[0]:
            error = "too-large"
        else:
            content = base64.b64encode(found.data).decode("ascii")
            budget[0] -= len(found.data)
    return ("<ref" + _t("attribute", attribute) + _t("value", value) + _t("path", path) + _t("exists", exists)
            + _t("length", length) + _t("modified", modified) + _t("error", error) + ">" + content + "</ref>")


def _candidates(data: bytes) -> tuple[list[tuple[str, str]], str]:
    """(attribute, value) of every <appSettings> in document order, deduplicated and capped;
    or the XmlException text when the file is not XML the collector's reader accepts."""
    try:
        root = parse_untrusted(data, forbid_doctype=True)
    except UntrustedXMLError as exc:
        if "DOCTYPE" in exc.reason:
            return [], DTD_PROHIBITED
        return [], f"{exc.reason} (lab: libxml2's wording, not .NET's)"
    found: list[tuple[str, str]] = []
    for element in root.iter():
        if not isinstance(element.tag, str) or qname(element) != "appSettings":
            continue
        for attribute in ("file", "configSource"):
            value = element.get(attribute)
            if value is not None and len(found) < MAX_REFS and (attribute, value) not in found:
                found.append((attribute, value))
    return found, ""


def configrefs_elements(server: SimServer, install_path: str) -> str:
    """The two <configrefs> elements collect.ps1 prints on `server`."""
    files = _folder(server)
    budget = [REF_BUDGET]
    parts = []
    for protocol in PROTOCOLS:
        proto = server.protocols[protocol]
        refs, error = "", ""
        if install_path and proto.config_bytes is not None and len(proto.config_bytes) <= REF_FILE_CAP:
            config = ntpath.normpath(install_path + "\\ClientAccess\\PopImap\\" + CONFIG_FILE_NAMES[protocol])
            candidates, error = _candidates(proto.config_bytes)
            refs = "".join(_ref(ntpath.dirname(config), files, a, v, budget) for a, v in candidates)
        parts.append("<configrefs" + _t("protocol", protocol) + _t("error", error) + ">" + refs + "</configrefs>")
    return "".join(parts)
