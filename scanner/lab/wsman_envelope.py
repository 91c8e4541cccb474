"""Envelopes of the lab's WS-Management answers: the SOAP envelope around a response or a
fault, with the namespace declarations and header Windows writes for each kind of answer
and WinRM stack (tests/replay/, docs/lab-differences.md, docs/lab.md).
"""

from __future__ import annotations

import typing
import uuid

from lxml import etree

from scanner.lab.platforms import Platform
from scanner.lab.wsman_faults import WSManFault
from scanner.lab.wsman_soap import ALL_NS, ANONYMOUS, NS, NS_FAULT, SHELL_NS, TRANSFER, XML_LANG, q

# Envelope namespace declarations per answer, in Windows' order (tests/replay/winrs_*.toml).
DECLARED: dict[str, tuple[str, ...]] = {
    "Create": ("s", "a", "x", "w", "rsp", "p"),
    "Command": ("s", "a", "x", "w", "rsp", "p"),
    "Send": ("s", "a", "x", "w", "rsp", "p"),
    "Signal": ("s", "a", "x", "w", "rsp", "p"),
    "Receive": ("s", "a", "w", "rsp", "p"),
    "Delete": ("s", "a", "w", "p"),
    "fault": ("s", "a", "x", "e", "n", "w", "p"),
}
RESPONSE_ACTIONS: dict[str, str] = {
    "Create": TRANSFER + "CreateResponse",
    "Command": SHELL_NS + "CommandResponse",
    "Receive": SHELL_NS + "ReceiveResponse",
    "Send": SHELL_NS + "SendResponse",
    "Signal": SHELL_NS + "SignalResponse",
    "Delete": TRANSFER + "DeleteResponse",
}


def envelope(windows: Platform, action: str, relates_to: str | None, payload: list[etree._Element],
             kind: str = "") -> bytes:
    """The SOAP envelope of an answer with `action`, relating to the request `relates_to`."""
    names = declared(windows, kind or action.rsplit("/", 1)[-1].removesuffix("Response"))
    root = etree.Element(q("s", "Envelope"), nsmap=names)
    root.set(XML_LANG, "en-US")
    header = etree.SubElement(root, q("s", "Header"))
    etree.SubElement(header, q("a", "Action")).text = action
    etree.SubElement(header, q("a", "MessageID")).text = f"uuid:{str(uuid.uuid4()).upper()}"
    etree.SubElement(header, q("a", "To")).text = ANONYMOUS
    if relates_to:
        etree.SubElement(header, q("a", "RelatesTo")).text = relates_to
    body = etree.SubElement(root, q("s", "Body"))
    body.extend(payload)
    etree.cleanup_namespaces(root, top_nsmap=names, keep_ns_prefixes=list(names))
    return typing.cast(bytes, etree.tostring(root, encoding="utf-8", xml_declaration=False))


def declared(windows: Platform, kind: str) -> dict[str, str]:
    """The namespaces Windows declares on the Envelope of an answer of `kind`
    (an operation's short name, or "fault"), as recorded: tests/replay/ and
    docs/lab-differences.md. WinRM 1.1 declares no `p` (WinRb's v1 stubs) and its
    CreateResponse declares x and rsp on x:ResourceCreated instead."""
    prefixes = DECLARED.get(kind, DECLARED["Create"])
    if windows.winrm == "1.1":
        prefixes = tuple(p for p in prefixes if p != "p" and not (kind == "Create" and p in ("x", "rsp")))
    return {p: ALL_NS[p] for p in prefixes}


def fault_body(windows: Platform, machine: str, fault: WSManFault, relates_to: str | None = None) -> bytes:
    """The SOAP envelope of a fault, as WinRM writes it; `machine` is the host name the
    client addressed (the recordings show the address used)."""
    fault_el = etree.Element(q("s", "Fault"), nsmap=NS)
    code = etree.SubElement(fault_el, q("s", "Code"))
    etree.SubElement(code, q("s", "Value")).text = fault.code
    sub = etree.SubElement(code, q("s", "Subcode"))
    etree.SubElement(sub, q("s", "Value")).text = fault.subcode
    reason = etree.SubElement(fault_el, q("s", "Reason"))
    text = etree.SubElement(reason, q("s", "Text"))
    text.set(XML_LANG, "en-US")
    text.text = fault.reason
    detail = etree.SubElement(fault_el, q("s", "Detail"))
    if fault.detail:
        etree.SubElement(detail, q("w", "FaultDetail")).text = fault.detail
    wsman_fault = etree.SubElement(detail, f"{{{NS_FAULT}}}WSManFault", nsmap={"f": NS_FAULT},
                                   Code=str(fault.wsman_code), Machine=machine)
    message = etree.SubElement(wsman_fault, f"{{{NS_FAULT}}}Message")
    if fault.provider is not None:
        name, path = fault.provider
        etree.SubElement(message, f"{{{NS_FAULT}}}ProviderFault", provider=name, path=path).text = fault.message
    else:
        message.text = fault.message
    return envelope(windows, fault.action, relates_to, [fault_el], kind="fault")

