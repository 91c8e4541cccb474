"""The package layout follows the data (docs/architecture.md): imports flow only forward
through the stages, no module imports itself back in a circle, and the top of `scanner/`
stays small. Checked by parsing the source, so no import runs."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scanner"
MAX_TOP_MODULES = 12

# Stages in the order data flows; a module may import its own stage or an earlier one.
STAGE_ORDER: dict[str, int] = {
    "util": 0, "errors": 0, "facts": 0,
    "inventory": 1, "collect": 1,
    "parse": 2,
    "store": 3,
    "judge": 4,
    "report": 5,
    # remedy (fix plan) reads the store, the judge's policy and the parser like the report
    # does; only the drivers import it
    "remedy": 5,
    "scan": 6, "demo": 6, "cli": 6, "__main__": 6, "__init__": 6,
}
LAB_MAY_IMPORT = {"lab", "collect", "parse", "util", "errors", "facts", "inventory"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported scanner module, line) for every import in the file, at any depth
    (lazy imports inside functions count: they are still a dependency)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in known and target.startswith("scanner") and target != name:
                yield target, node.lineno


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, known):
            edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles() -> None:
    graph = _graph()
    # a package's __init__ importing its own submodules is how packages re-export: the
    # edge from a submodule up to its package is then the same module, not a cycle
    def edges(module: str) -> list[str]:
        return [t for t in graph[module] if not module.startswith(t + ".") and not t.startswith(module + ".")]

    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in edges(module):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_flow_forward_through_the_stages() -> None:
    graph = _graph()
    backwards = []
    for module, edges in sorted(graph.items()):
        here = _stage(module)
        for target, line in sorted(edges.items()):
            there = _stage(target)
            if there == "__init__" or here == there:
                continue
            if here == "lab":
                allowed = there in LAB_MAY_IMPORT
            elif there == "lab":
                allowed = here in ("cli", "demo")
            else:
                allowed = STAGE_ORDER[there] <= STAGE_ORDER[here]
            if not allowed:
                backwards.append(f"{module} (line {line}) imports {target}")
    assert backwards == []


def test_every_module_has_a_stage() -> None:
    unknown = sorted({_stage(m) for m in _modules()} - set(STAGE_ORDER) - {"lab"})
    assert unknown == [], f"place these in STAGE_ORDER and docs/architecture.md: {unknown}"


def test_at_most_twelve_modules_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


MAX_LINES = 600  # issue 14: a module that grows past this is split along its seams


def test_no_module_above_600_lines() -> None:
    """Before the splits: store/repo.py had 1,010 lines, lab/wsman.py, httpserver.py and fleet.py
    were above the limit too."""
    long = {str(path.relative_to(PACKAGE.parent)): lines for path in sorted(PACKAGE.rglob("*.py"))
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these along their seams (at most {MAX_LINES} lines): {long}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from scanner.report.write import write_report\n", "scanner.report.write"),
        ("def f():\n    from scanner.judge import checks\n", "scanner.judge.checks"),
        ("import scanner.store.repo\n", "scanner.store.repo"),
    ],
)
def test_the_checker_sees_every_kind_of_import(tmp_path: Path, source: str, expected: str) -> None:
    """Top-level, lazy and plain imports all count (a lazy import is how cycles hid before)."""
    path = tmp_path / "probe.py"
    path.write_text(source, encoding="utf-8")
    found = {target for target, _line in _imports("scanner.probe", path, set(_modules()))}
    assert expected in found


def test_every_document_the_code_cites_is_in_the_repository() -> None:
    """Comments and docstrings cite docs/*.md of this repository, never a file a maintainer lacks."""
    root = PACKAGE.parent
    cited: dict[str, str] = {}
    for folder in ("scanner", "tests"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".py", ".toml", ".ps1", ".xsd") or path == Path(__file__).resolve():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for match in re.finditer(r"\bdocs/[\w./-]+\.md\b", text):
                cited.setdefault(match.group(0), str(path.relative_to(root)))
            for outside in ("design.md", "engineering-notes.md", "../shared", "/work/shared"):
                assert outside not in text.replace("docs/", ""), f"{path.relative_to(root)} cites {outside}"
    missing = {doc: where for doc, where in cited.items() if not (root / doc).is_file()}
    assert cited and missing == {}


# -- one module opens connections -------------------------------------------------------------

#: The module that opens every connection to a server (TCP, TLS, HTTP): docs/architecture.md.
CONNECTIONS = "scanner.collect.httpguard"
#: Imported only there (the lab is the server side and listens; it is not checked).
NETWORK_ONLY = ("ssl", "urllib3", "http.client", "http")
#: Elsewhere `socket` may name this machine, and `requests` may name exception and session
#: types (winrm_client translates pywinrm's errors), but neither may make a connection.
SOCKET_ALLOWED = {"gethostname", "getfqdn", "gaierror"}
REQUESTS_ALLOWED = {"exceptions", "Session", "PreparedRequest", "Response"}
#: pywinrm makes its own requests Sessions: only winrm_client uses it, and mounts httpguard's
#: adapter on every Session before its first request.
WINRM_USER = "scanner.collect.winrm_client"
#: ldap3 opens its own sockets (with its own connect and receive timeouts): only ldapclient
#: uses it (`inventory discover --ldap`), and may name ssl's certificate settings for it.
LDAP_USER = "scanner.collect.ldapclient"


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside annotations (a type named there is never called)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        annotations: list[ast.expr | None] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            annotations = [a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs,
                                                  args.vararg, args.kwarg] if a is not None]
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for annotation in annotations:
            if annotation is not None:
                inside.update(id(n) for n in ast.walk(annotation))
    return inside


def connection_uses(source: str) -> list[str]:
    """What in `source` could open a connection outside the connections module."""
    tree = ast.parse(source)
    problems: list[str] = []
    names: dict[str, str] = {}  # local name -> socket | requests
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if alias.name in NETWORK_ONLY or root in NETWORK_ONLY:
                    problems.append(f"line {node.lineno}: import {alias.name}")
                elif alias.name in ("socket", "requests"):
                    names[alias.asname or alias.name] = alias.name
                elif root in ("socket", "requests"):
                    problems.append(f"line {node.lineno}: import {alias.name}")
                elif root == "winrm":
                    problems.append(f"line {node.lineno}: import {alias.name} (pywinrm opens connections)")
                elif root == "ldap3":
                    problems.append(f"line {node.lineno}: import {alias.name} (ldap3 opens connections)")
        elif isinstance(node, ast.ImportFrom) and not node.level:
            module = node.module or ""
            root = module.split(".")[0]
            if module in NETWORK_ONLY or root in NETWORK_ONLY:
                problems.append(f"line {node.lineno}: from {module} import ...")
            elif root == "winrm":
                problems.append(f"line {node.lineno}: from {module} import ... (pywinrm opens connections)")
            elif root == "ldap3":
                problems.append(f"line {node.lineno}: from {module} import ... (ldap3 opens connections)")
            elif module == "socket":
                problems += [f"line {node.lineno}: from socket import {a.name}" for a in node.names
                             if a.name not in SOCKET_ALLOWED]
            elif root == "requests" and module != "requests.exceptions":
                problems.append(f"line {node.lineno}: from {module} import ...")
    annotations = _annotation_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names:
            module = names[node.value.id]
            allowed = SOCKET_ALLOWED if module == "socket" else REQUESTS_ALLOWED
            if node.attr not in allowed:
                problems.append(f"line {node.lineno}: {module}.{node.attr}")
            elif module == "requests" and node.attr != "exceptions" and id(node) not in annotations:
                problems.append(f"line {node.lineno}: requests.{node.attr} outside a type annotation")
    return problems


def test_one_module_opens_connections() -> None:
    found = []
    for name, path in _modules().items():
        if name == CONNECTIONS or _stage(name) == "lab":
            continue
        problems = connection_uses(path.read_text(encoding="utf-8"))
        if name == WINRM_USER:
            problems = [p for p in problems if "pywinrm" not in p]
        if name == LDAP_USER:
            problems = [p for p in problems if "ldap3" not in p and not p.endswith(": import ssl")]
        found += [f"{name} {p}" for p in problems]
    assert found == [], "only scanner/collect/httpguard.py opens connections: " + "; ".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import socket\nsocket.create_connection(('h', 80))\n", "socket.create_connection"),
        ("import socket as s\ns.socket()\n", "socket.socket"),
        ("from socket import create_connection\n", "from socket import create_connection"),
        ("import ssl\n", "import ssl"),
        ("def f():\n    import urllib3\n", "import urllib3"),
        ("from http.client import HTTPSConnection\n", "from http.client import"),
        ("import http.client\n", "import http.client"),
        ("import requests\nrequests.post('http://h')\n", "requests.post"),
        ("import requests\ns = requests.Session()\n", "requests.Session outside a type annotation"),
        ("from requests.adapters import HTTPAdapter\n", "from requests.adapters import"),
        ("from winrm.protocol import Protocol\n", "pywinrm"),
    ],
)
def test_the_connection_check_sees_each_way_to_connect(source: str, expected: str) -> None:
    assert any(expected in problem for problem in connection_uses(source)), connection_uses(source)


def test_the_connection_check_lets_names_and_types_pass() -> None:
    source = ("import socket\nimport requests\nhere = socket.gethostname()\n"
              "def f(s: requests.Session) -> requests.Session:\n"
              "    try:\n        return s\n    except requests.exceptions.SSLError:\n        raise\n")
    assert connection_uses(source) == []
