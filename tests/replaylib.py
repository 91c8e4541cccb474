"""Recorded Windows exchanges (tests/replay/*.toml): loading, replaying over a stubbed HTTP
layer, and comparing SOAP documents structurally with their ids normalised.

The replay replaces only the server: a loopback HTTP server answers each request with the
recorded response to the same action, after checking that the request has the recorded
request's shape. pywinrm, requests and everything of ours (the per-server HTTP guard
included) run unmodified over a real socket.
"""

from __future__ import annotations

import re
import socket
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lxml import etree

FIXTURES = Path(__file__).parent / "replay"
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


@dataclass(frozen=True)
class Exchange:
    action: str          # short name of the request's wsa:Action (Create, Command, ...)
    status: int          # HTTP status of the response (0: not recorded)
    request: str         # SOAP body sent ("" when the recording kept none)
    response: str        # SOAP body answered
    path: str            # the recording's file, for multi-file sources


@dataclass(frozen=True)
class Recording:
    name: str
    source: dict[str, str]
    exchanges: tuple[Exchange, ...]

    def first(self, action: str, nth: int = 0) -> Exchange:
        """The nth exchange of `action`."""
        return [e for e in self.exchanges if e.action == action][nth]


def names() -> list[str]:
    """Every recording under tests/replay/."""
    return sorted(p.stem for p in FIXTURES.glob("*.toml"))


def load(name: str) -> Recording:
    with open(FIXTURES / f"{name}.toml", "rb") as fh:
        data: dict[str, Any] = tomllib.load(fh)
    source = data["source"]
    exchanges = tuple(Exchange(e["action"], int(e["status"]), e["request"], e["response"],
                               e.get("path", source["path"])) for e in data["exchange"])
    return Recording(name, source, exchanges)


def parse(xml: str | bytes) -> etree._Element:
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))


def action_of(xml: str | bytes) -> str:
    """Short name of a document's wsa:Action ("Create", "CreateResponse", "fault", ...)."""
    el = parse(xml).find("s:Header/a:Action", NS)
    return (el.text or "").strip().rsplit("/", 1)[-1] if el is not None else ""


def text_of(root: etree._Element, path: str) -> str:
    el = root.find(path, NS)
    return (el.text or "").strip() if el is not None else ""


def selectors(root: etree._Element) -> dict[str, str]:
    return {s.get("Name", ""): (s.text or "").strip()
            for s in root.findall("s:Header/w:SelectorSet/w:Selector", NS)}


def options(root: etree._Element) -> dict[str, str]:
    return {o.get("Name", ""): (o.text or "").strip()
            for o in root.findall("s:Header/w:OptionSet/w:Option", NS)}


def body_child(root: etree._Element) -> etree._Element | None:
    body = root.find("s:Body", NS)
    return body[0] if body is not None and len(body) else None


def norm_id(value: str) -> str:
    """Ids normalised: every GUID becomes <id> (a `uuid:` prefix stays visible)."""
    return _ID.sub("<id>", value)


# -- replay over a stubbed HTTP layer ---------------------------------------------------------


@dataclass
class Replayer:
    """Answers SOAP requests from a recording, in order.

    A request is answered by the next recorded exchange of the same action; recorded
    exchanges of an action in `optional` may be passed over (the client need not send
    them). The request must have the recorded request's shape (`request_problems`).
    Whatever does not fit is written to `problems` and answered with an empty HTTP 400,
    so a test sees it even when the code under test turns exceptions into errors.
    """

    recording: Recording
    optional: tuple[str, ...] = ("Signal",)
    check_ids: bool = True
    position: int = 0
    served: list[str] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answer(self, body: bytes) -> tuple[int, bytes]:
        with self.lock:
            self.sent.append(body)
            try:
                action = action_of(body)
            except etree.XMLSyntaxError as exc:
                return self._refuse(f"request {len(self.sent)} is not XML: {exc}")
            index = self.position
            exchanges = self.recording.exchanges
            while index < len(exchanges) and exchanges[index].action != action:
                if exchanges[index].action not in self.optional:
                    break
                index += 1
            if index >= len(exchanges) or exchanges[index].action != action:
                return self._refuse(f"request {len(self.sent)} ({action}) has no recorded answer "
                                    f"after exchange {self.position} of {self.recording.name}")
            exchange = exchanges[index]
            problems = request_problems(exchange.request, body, check_ids=self.check_ids) if exchange.request else []
            if problems:
                return self._refuse(f"request {len(self.sent)} ({action}): " + "; ".join(problems))
            self.position = index + 1
            self.served.append(action)
            # Ids normalised: the answer relates to the MessageID actually sent (pywinrm checks
            # RelatesTo after a Signal); everything else is the recorded text.
            message_id = text_of(parse(body), "s:Header/a:MessageID")
            text = re.sub(r"(<a:RelatesTo>)[^<]*(</a:RelatesTo>)", rf"\g<1>{message_id}\g<2>",
                          exchange.response) if message_id else exchange.response
            return exchange.status or 500, text.encode("utf-8")

    def _refuse(self, problem: str) -> tuple[int, bytes]:
        self.problems.append(problem)
        return 400, b""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ReplayHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK waits

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not self.headers.get("Authorization"):
            status, content = 401, b""   # WinRM never answers an unauthenticated request
        else:
            status, content = self.server.replayer.answer(body)
        self.send_response(status)
        if content:
            self.send_header("Content-Type", SOAP_CONTENT_TYPE)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ReplayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, replayer: Replayer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replayer = replayer


@dataclass
class Replay:
    """A recording served over loopback HTTP: `endpoint` for the client, `replayer` for checks."""

    endpoint: str
    port: int
    replayer: Replayer

    @property
    def problems(self) -> list[str]:
        return self.replayer.problems

    @property
    def served(self) -> list[str]:
        return self.replayer.served

    @property
    def sent(self) -> list[bytes]:
        return self.replayer.sent


@contextmanager
def replaying(recording: Recording, **kw: Any) -> Iterator[Replay]:
    """The recording answered by a loopback HTTP server while the block runs.

    Only the HTTP layer is replaced: the client connects, authenticates (Basic) and reads
    answers over a real socket, so everything of the client runs unmodified."""
    replayer = Replayer(recording, **kw)
    server = _ReplayHTTPServer(replayer)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=f"replay-{recording.name}", daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield Replay(f"http://127.0.0.1:{port}/wsman", int(port), replayer)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def request_problems(recorded: str, sent: bytes, *, check_ids: bool = True) -> list[str]:
    """How a sent request differs in shape from the recorded one (empty: same shape).

    Shape: action, resource URI, selector names (and values: the client must echo the ids
    the server handed out), the body's element, and the ids a Receive/Signal/Send names.
    Command lines, options and environment values are the client's own business.
    """
    want, got = parse(recorded), parse(sent)
    problems: list[str] = []
    for path in ("s:Header/a:Action", "s:Header/w:ResourceURI"):
        if text_of(want, path) != text_of(got, path):
            problems.append(f"{path} is {text_of(got, path)!r}, recorded {text_of(want, path)!r}")
    want_sel, got_sel = selectors(want), selectors(got)
    if set(want_sel) != set(got_sel):
        problems.append(f"selectors {sorted(got_sel)}, recorded {sorted(want_sel)}")
    elif check_ids and want_sel != got_sel:
        problems.append(f"selector values {got_sel}, recorded {want_sel}")
    want_body, got_body = body_child(want), body_child(got)
    want_tag = want_body.tag if want_body is not None else None
    got_tag = got_body.tag if got_body is not None else None
    if want_tag != got_tag:
        problems.append(f"body element {got_tag}, recorded {want_tag}")
    elif want_body is not None and got_body is not None and check_ids:
        for el_want, el_got in zip(want_body.iter(), got_body.iter(), strict=False):
            if el_want.get("CommandId") != el_got.get("CommandId"):
                problems.append(f"CommandId {el_got.get('CommandId')!r} on {etree.QName(el_got).localname}, "
                                f"recorded {el_want.get('CommandId')!r}")
    return problems


# -- structural comparison -------------------------------------------------------------------

# Elements whose text is data of the particular server, shell or command (compared as
# present/absent only): addresses, owners, times, stream bytes, the machine name.
DATA_TEXT = {
    f"{{{NS['a']}}}Address", f"{{{NS['rsp']}}}Owner", f"{{{NS['rsp']}}}ClientIP",
    f"{{{NS['rsp']}}}ShellRunTime", f"{{{NS['rsp']}}}ShellInactivity", f"{{{NS['rsp']}}}Stream",
}
DATA_ATTRIBUTES = {"Machine"}


def outline(xml: str | bytes, *, skip: frozenset[str] = frozenset()) -> list[str]:
    """A document as lines: `depth prefix:local {ns} attrs = text`, ids normalised.

    Namespace declarations of the root are one line (sorted prefix=uri); consecutive data
    chunks of one output stream are one line (how a process's output is cut into chunks
    depends on its pipe writes, not on the protocol). Elements named (Clark notation) in
    `skip` are left out with their children.
    """
    root = parse(xml)
    lines = ["xmlns " + " ".join(f"{p}={u}" for p, u in sorted(root.nsmap.items(), key=lambda i: str(i[0])))]

    def walk(el: etree._Element, depth: int) -> None:
        previous = ""
        for child in el:
            if not isinstance(child.tag, str) or child.tag in skip:
                continue
            line = _line(child, depth)
            is_chunk = (child.tag == f"{{{NS['rsp']}}}Stream" and child.get("End") is None)
            if is_chunk and line == previous:
                continue
            previous = line if is_chunk else ""
            lines.append(line)
            walk(child, depth + 1)

    lines.append(_line(root, 0))
    walk(root, 1)
    return lines


def _line(el: etree._Element, depth: int) -> str:
    qname = etree.QName(el)
    attrs = []
    for name, value in sorted(el.attrib.items()):
        shown = "..." if name in DATA_ATTRIBUTES else norm_id(value)
        attrs.append(f"{etree.QName(name).localname}={shown}")
    text = (el.text or "").strip()
    if el.tag in DATA_TEXT:
        text = "..." if text else ""
    else:
        text = norm_id(" ".join(text.split()))
    return f"{depth} {el.prefix}:{qname.localname} {{{qname.namespace}}} {' '.join(attrs)} = {text}"
