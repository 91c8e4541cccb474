"""WS-Management Identify as the lab answers it ([DMTF DSP0226] 11; docs/lab.md, "Identify"):
recognising the request and writing the IdentifyResponse WinRM sends.
"""

from __future__ import annotations

import typing

from lxml import etree

from scanner.lab.wsman_soap import NS, XML_LANG, q
from scanner.util.xmlsafe import hardened_parser

NS_WSMID = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"
IDENTIFY_PROTOCOL_VERSION = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
IDENTIFY_VENDOR = "Microsoft Corporation"
#: The HTTP header that asks WinRM to answer Identify without authentication.
IDENTIFY_HEADER = "WSMANIDENTIFY"


def is_identify(body: bytes) -> bool:
    """Whether `body` is an Identify request: a SOAP 1.2 envelope whose Body holds exactly
    one wsmid:Identify element (it carries no WS-Addressing headers)."""
    try:
        root = etree.fromstring(body, hardened_parser())
    except etree.XMLSyntaxError:
        return False
    soap_body = root.find("s:Body", NS) if root.tag == q("s", "Envelope") else None
    return soap_body is not None and len(soap_body) == 1 and soap_body[0].tag == f"{{{NS_WSMID}}}Identify"


def anonymous_product_version(stack: str) -> str:
    """ProductVersion of an unauthenticated Identify: the OS zeroed, the stack shown."""
    return f"OS: 0.0.0 SP: 0.0 Stack: {stack}"


def identify_response(product_version: str) -> bytes:
    """The IdentifyResponse envelope as WinRM writes it."""
    envelope = etree.Element(q("s", "Envelope"), nsmap={"s": NS["s"]})
    envelope.set(XML_LANG, "en-US")
    etree.SubElement(envelope, q("s", "Header"))
    body = etree.SubElement(envelope, q("s", "Body"))
    response = etree.SubElement(body, f"{{{NS_WSMID}}}IdentifyResponse", nsmap={"wsmid": NS_WSMID})
    for name, value in (("ProtocolVersion", IDENTIFY_PROTOCOL_VERSION), ("ProductVendor", IDENTIFY_VENDOR),
                        ("ProductVersion", product_version)):
        etree.SubElement(response, f"{{{NS_WSMID}}}{name}").text = value
    return typing.cast(bytes, etree.tostring(envelope, encoding="utf-8", xml_declaration=False))
