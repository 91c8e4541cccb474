"""Text that comes back from a WinRS shell, made readable: stderr in the shell's code
page, the message of a WS-Management fault. No network here (scanner/collect/winrm_client.py)."""

from __future__ import annotations

import codecs
import re

from scanner import collect as collector
from scanner.util.xmlsafe import UntrustedXMLError, parse_untrusted

_CLIXML_TEXT = re.compile(r'<S S="Error">(.*?)</S>', re.S)


def shell_codec(codepage: int = collector.SHELL_CODEPAGE) -> str:
    """The Python codec of a shell's code page (WINRS_CODEPAGE): 437 -> cp437, 65001 -> utf-8."""
    if codepage == 65001:
        return "utf-8"
    try:
        return codecs.lookup(f"cp{codepage}").name
    except LookupError:
        return "cp437"


def stderr_summary(stderr: bytes, limit: int = 300, codepage: int = collector.SHELL_CODEPAGE) -> str:
    """The first meaningful line of stderr (CLIXML error records unpacked), shortened.

    Errors reach stderr as the console writes them: in the shell's code page (the OEM
    code page WINRS_CODEPAGE asked for, 437), not UTF-8 (only the scripts' own stdout is
    raw UTF-8, docs/launch.md)."""
    text = stderr.decode(shell_codec(codepage), errors="replace")
    if text.startswith("#< CLIXML"):
        parts = [p.replace("_x000D__x000A_", " ") for p in _CLIXML_TEXT.findall(text)]
        text = " ".join(parts)
    text = " ".join(text.split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:limit] + ("..." if len(text) > limit else "")


_NS_WSMANFAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"


def printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def fault_message(response: object) -> str:
    """The text of a fault's f:WSManFault/f:Message (a shell plugin's or a nested fault's
    message included), which often says more than s:Reason: e.g. "...a command identifier
    that does not exist" under the generic "invalid selectors" reason
    (tests/replay/winrs_bad_cmd_id.toml)."""
    if not isinstance(response, (str, bytes)) or not response:
        return ""
    data = response.encode("utf-8", errors="replace") if isinstance(response, str) else response
    try:
        root = parse_untrusted(data, max_bytes=256 * 1024)
    except UntrustedXMLError:
        return ""
    message = root.find(f".//{{{_NS_WSMANFAULT}}}WSManFault/{{{_NS_WSMANFAULT}}}Message")
    if message is None:
        return ""
    return printable(" ".join("".join(message.itertext()).split()))
