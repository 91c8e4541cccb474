"""Hardened XML parsing for everything that comes from a server.

Every byte a CAS returns may come from a compromised machine: XML is parsed with
entity resolution, DTD loading and network access off, a size cap checked before
the parser sees a byte, and (by default) any DOCTYPE refused outright.
"""

from __future__ import annotations

from lxml import etree

MAX_XML_BYTES = 1024 * 1024

_HARDENED_DEFAULTS: dict[str, bool] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
    "dtd_validation": False,
    "remove_comments": False,
}


class UntrustedXMLError(ValueError):
    """Untrusted XML refused: too large, carrying a DOCTYPE, or not well-formed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def hardened_parser(**overrides: bool) -> etree.XMLParser:
    """A fresh lxml parser with every dangerous feature off (one per call: not shareable
    across threads). Keyword arguments override individual settings."""
    options: dict[str, bool] = dict(_HARDENED_DEFAULTS)
    options.update(overrides)
    return etree.XMLParser(**options)


def _syntax_reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # libxml2 messages name the document as "<string>" and quote input: keep them short.
    return text if len(text) <= 200 else text[:197] + "..."


def parse_untrusted(
    data: bytes, *, max_bytes: int = MAX_XML_BYTES, forbid_doctype: bool = True
) -> etree._Element:
    """Parse `data` (bytes, encoding found by BOM/declaration) and return the root element.

    Raises UntrustedXMLError for more than `max_bytes`, a DOCTYPE (when forbidden) or
    anything that is not a well-formed document.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UntrustedXMLError("not bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise UntrustedXMLError(f"too large: {len(data)} bytes (limit {max_bytes})")
    if not data.strip(b" \t\r\n\x00"):
        raise UntrustedXMLError("empty document")
    try:
        root = etree.fromstring(data, parser=hardened_parser())
    except etree.XMLSyntaxError as exc:
        raise UntrustedXMLError(f"not well-formed: {_syntax_reason(exc)}") from None
    except (etree.LxmlError, ValueError, LookupError, UnicodeError, TypeError) as exc:
        raise UntrustedXMLError(f"not parseable: {_syntax_reason(exc)}") from None
    if root is None:
        raise UntrustedXMLError("no root element")
    if forbid_doctype:
        docinfo = root.getroottree().docinfo
        if (
            docinfo.doctype
            or docinfo.internalDTD is not None
            or docinfo.externalDTD is not None
            or docinfo.system_url
            or docinfo.public_id
        ):
            raise UntrustedXMLError("DOCTYPE present: refused")
    return root
