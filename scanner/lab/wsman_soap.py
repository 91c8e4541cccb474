"""SOAP parsing for the lab's WS-Management service: the namespaces and actions Windows
uses, and a request body checked and read into a `Request` as WinRM reads it ([MS-WSMV],
DSP0226). Bad input becomes the WSManFault Windows answers (scanner/lab/wsman_faults.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from scanner.lab.wsman_faults import (
    ADDRESSING_FAULT_ACTION,
    ERROR_WSMAN_ACTION_NOT_SUPPORTED,
    ERROR_WSMAN_DESTINATION_UNREACHABLE,
    ERROR_WSMAN_INVALID_XML,
    ERROR_WSMAN_MESSAGE_INFORMATION_HEADER_REQUIRED,
    ERROR_WSMAN_SCHEMA_VALIDATION_ERROR,
    WSManFault,
    schema_fault,
)
from scanner.util.xmlsafe import hardened_parser

# Namespaces exactly as Windows writes them (prefixes included).
NS: dict[str, str] = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
}
NS_FAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_EVENTING = "http://schemas.xmlsoap.org/ws/2004/08/eventing"
NS_ENUMERATION = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
ALL_NS: dict[str, str] = {**NS, "e": NS_EVENTING, "n": NS_ENUMERATION}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

SHELL_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTIONS: dict[str, str] = {
    TRANSFER + "Create": "Create",
    SHELL_NS + "Command": "Command",
    SHELL_NS + "Receive": "Receive",
    SHELL_NS + "Send": "Send",
    SHELL_NS + "Signal": "Signal",
    TRANSFER + "Delete": "Delete",
}

MAX_SOAP_BYTES = 512 * 1024           # decrypted request body cap
DEFAULT_MAX_ENVELOPE = 153600         # WinRM 2.0 MaxEnvelopeSizekb = 150
MIN_MAX_ENVELOPE = 8192
DEFAULT_OPERATION_TIMEOUT_S = 60.0    # WinRM's default when the header is absent
MAX_OPERATION_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Request:
    """One parsed WS-Management request."""

    action: str
    message_id: str
    header: etree._Element
    body: etree._Element
    max_envelope: int
    operation_timeout_s: float
    #: The logon carried delegated credentials (a forwarded Kerberos ticket): set by the
    #: transport, never by the request's own content.
    delegated: bool = False
    admin: bool = False  # the logon is the lab's admin account: set by the transport


def q(prefix: str, local: str) -> str:
    """The Clark name of `local` in the namespace of `prefix` (NS)."""
    return f"{{{NS[prefix]}}}{local}"


_DURATION = re.compile(r"^P(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?)?$")


def parse_duration(text: str) -> float | None:
    """Seconds of an xs:duration like PT20.000S (days and larger units not accepted)."""
    m = _DURATION.match(text.strip())
    if m is None or text.strip() in ("P", "PT"):
        return None
    hours, minutes, seconds = m.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def parse_request(body: bytes, service_max_envelope: int) -> Request:
    """Check and read one request body; a WSManFault for anything Windows refuses.
    `service_max_envelope` is the server's MaxEnvelopeSizekb * 1024."""
    try:
        root = etree.fromstring(body, hardened_parser())
    except etree.XMLSyntaxError:
        raise WSManFault("s:Sender", "w:SchemaValidationError",
                         "The WS-Management service cannot process the request because the "
                         "XML is invalid. ", ERROR_WSMAN_INVALID_XML) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        # SOAP 1.2 part 1, 5: a SOAP message MUST NOT contain a document type declaration.
        raise WSManFault("s:Sender", "w:SchemaValidationError",
                         "The WS-Management service cannot process the request because the "
                         "XML contains a document type declaration. ", ERROR_WSMAN_INVALID_XML)
    if root.tag != q("s", "Envelope"):
        raise schema_fault("The SOAP envelope is missing or has the wrong namespace.")
    header = root.find("s:Header", NS)
    soap_body = root.find("s:Body", NS)
    if header is None or soap_body is None:
        raise schema_fault("The SOAP envelope has no Header or no Body.")
    message_id = el_text(header.find("a:MessageID", NS))
    if not message_id:
        raise WSManFault("s:Sender", "a:MessageInformationHeaderRequired",
                         "A required header representing a Message Addressing Property is "
                         "not present ", ERROR_WSMAN_MESSAGE_INFORMATION_HEADER_REQUIRED,
                         action=ADDRESSING_FAULT_ACTION)
    action = el_text(header.find("a:Action", NS))
    if action not in ACTIONS:
        raise WSManFault("s:Sender", "a:ActionNotSupported",
                         "The action is not supported by the service. ",
                         ERROR_WSMAN_ACTION_NOT_SUPPORTED, action=ADDRESSING_FAULT_ACTION)
    resource_uri = el_text(header.find("w:ResourceURI", NS))
    if resource_uri.lower() != SHELL_RESOURCE_URI:
        raise WSManFault("s:Sender", "a:DestinationUnreachable",
                         "The WS-Management service cannot process the request because the "
                         "resource URI is not valid. ", ERROR_WSMAN_DESTINATION_UNREACHABLE,
                         action=ADDRESSING_FAULT_ACTION)
    max_env = service_max_envelope
    max_env_text = el_text(header.find("w:MaxEnvelopeSize", NS))
    if max_env_text:
        if not max_env_text.isdigit() or len(max_env_text) > 9:
            raise schema_fault("MaxEnvelopeSize is not a number.")
        # The server caps the client's value at its own MaxEnvelopeSizekb ([MS-WSMV] 3.1.4.1.7).
        max_env = min(max(int(max_env_text), MIN_MAX_ENVELOPE), service_max_envelope)
    timeout = DEFAULT_OPERATION_TIMEOUT_S
    timeout_text = el_text(header.find("w:OperationTimeout", NS))
    if timeout_text:
        parsed = parse_duration(timeout_text)
        if parsed is None:
            raise WSManFault("s:Sender", "w:InvalidHeader",
                             "The WS-Management service cannot process the request because the "
                             "OperationTimeout header is not valid. ",
                             ERROR_WSMAN_SCHEMA_VALIDATION_ERROR)
        timeout = min(parsed, MAX_OPERATION_TIMEOUT_S)
    return Request(action, message_id, header, soap_body, max_env, timeout)


def el_text(el: etree._Element | None, *, strip: bool = True) -> str:
    """The text of `el` (stripped unless `strip` is false); "" for no element or no text."""
    if el is None or el.text is None:
        return ""
    value = str(el.text)
    return value.strip() if strip else value


def nested(body: etree._Element, operation: str, child: str) -> etree._Element:
    """rsp:<operation>/rsp:<child> of a request body; a schema fault if it is missing."""
    outer = body.find(f"rsp:{operation}", NS)
    inner = outer.find(f"rsp:{child}", NS) if outer is not None else None
    if inner is None:
        raise schema_fault(f"The {operation} request has no rsp:{child} element.")
    return inner


def option_values(header: etree._Element) -> dict[str, str]:
    """The w:OptionSet of a request header: option names upper-cased, values stripped."""
    options: dict[str, str] = {}
    option_set = header.find("w:OptionSet", NS)
    if option_set is not None:
        for option in option_set.findall("w:Option", NS):
            name = option.get("Name")
            if name:
                options[name.upper()] = el_text(option)
    return options

