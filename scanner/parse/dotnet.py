""".NET 2.0 primitives the config reader needs: Boolean.TryParse, the key comparers of
appSettings, the white space of String.Trim, and how XmlReader names elements and
attributes. Pure functions over strings and lxml elements; no Exchange knowledge."""

from __future__ import annotations

import re

from lxml import etree

KEY = "AllowCrossSiteSessions"

# String.WhitespaceChars of .NET 2.0-3.5 (what String.Trim() and Trim(char[]) use).
NET2_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u200b\u3000\ufeff"
)
# Boolean.TryParse trims the white space and the NUL it adds.
_BOOL_TRIM = NET2_WHITESPACE + "\x00"

# Code points that culture-sensitive comparison (InvariantCultureIgnoreCase, used by
# the NameValueCollection behind ConfigurationManager.AppSettings) skips. An
# approximation of the NLS tables: the commonly ignorable format characters.
_NLS_IGNORABLE = frozenset("\x00\xad\u200b\u200c\u200d\u200e\u200f\u2060\ufeff")
_MAX_NAME_IN_NOTE = 120


class Refused(Exception):
    """.NET would not hand out appSettings for this file (a configuration error)."""


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


def ordinal_ignore_case(key: str) -> str:
    """StringComparer.OrdinalIgnoreCase as a key: per-character simple upper case."""
    if key.isascii():  # ASCII letters upper-case one to one: str.upper is the same, faster
        return key.upper()
    out = []
    for ch in key:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


def culture_ignore_case(key: str) -> str:
    """StringComparer.InvariantCultureIgnoreCase, approximated as a key: ignorable code
    points dropped, per-character simple lower case."""
    if key.isascii() and "\x00" not in key:  # nothing ignorable, one-to-one lower case
        return key.lower()
    out = []
    for ch in key:
        if ch in _NLS_IGNORABLE:
            continue
        low = ch.lower()
        out.append(low if len(low) == 1 else ch)
    return "".join(out)


KEY_ORDINAL = ordinal_ignore_case(KEY)
KEY_CULTURE = culture_ignore_case(KEY)


def touches_key(key: str | None) -> bool:
    """Whether an appSettings key is AllowCrossSiteSessions under either comparer."""
    if key is None:
        return False
    return ordinal_ignore_case(key) == KEY_ORDINAL or culture_ignore_case(key) == KEY_CULTURE


def sniff_encoding(data: bytes) -> str:
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


def printable(text: str, limit: int = _MAX_NAME_IN_NOTE) -> str:
    """Untrusted text made safe for a note: control characters escaped, length capped."""
    cleaned = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def qname(el: etree._Element) -> str:
    """The element name as .NET's XmlReader.Name gives it: prefix:local, namespace ignored."""
    local = etree.QName(el).localname
    return f"{el.prefix}:{local}" if el.prefix else local


def attr_name(name: str, el: etree._Element) -> str:
    """An attribute name as XmlReader.Name gives it."""
    if not name.startswith("{"):
        return name
    uri, local = name[1:].split("}", 1)
    for prefix, ns in el.nsmap.items():
        if ns == uri and prefix:
            return f"{prefix}:{local}"
    return local


def attributes(el: etree._Element) -> dict[str, str]:
    return {attr_name(k, el): v for k, v in el.attrib.items()}


def new_ns_declarations(el: etree._Element) -> list[str]:
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


def is_blank(text: str | None) -> bool:
    return text is None or text.strip(" \t\r\n") == ""


def check_only_elements_and_comments(el: etree._Element, where: str) -> None:
    """Between sections .NET allows elements, comments and white space only."""
    if not is_blank(el.text):
        raise Refused(f"text content inside <{where}>")
    for child in el:
        if not is_blank(child.tail):
            raise Refused(f"text content inside <{where}>")
        if isinstance(child, etree._ProcessingInstruction):
            raise Refused(f"a processing instruction inside <{where}>")
        if isinstance(child, etree._Entity):
            raise Refused(f"an entity reference inside <{where}>")


def elements(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]
