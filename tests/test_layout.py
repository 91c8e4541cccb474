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
