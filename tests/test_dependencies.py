"""What cas-audit takes from other distributions is declared, and what it patches is pinned.

- Every distribution a module of scanner/ imports is named in pyproject.toml (dependencies
  or an extra), with a lower bound; imports are mapped to distributions with
  importlib.metadata.packages_distributions().
- scanner/collect/winrm_client.py replaces pywinrm's private Transport.build_session and
  Transport.setup_encryption (httpguard must be mounted before pywinrm's first request):
  their signatures must be the ones of the pywinrm releases pyproject allows.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

#: The signatures of pywinrm 0.5.0 (winrm/transport.py) that winrm_client._guard relies on.
#: 0.4.x had `setup_encryption(self)` (it read self.session): a different contract.
PATCHED_SIGNATURES = {
    "build_session": "(self) -> 'requests.Session'",
    "setup_encryption": "(self, session: 'requests.Session') -> 'None'",
    "close_session": "(self) -> 'None'",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    return [Requirement(line) for line in lines]


def _imported_modules() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in scanner/ (absolute imports), with the files."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "scanner").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_distribution_scanner_imports_is_declared_with_a_lower_bound() -> None:
    declared = {_normal(r.name): r for r in _requirements()}
    owners = packages_distributions()
    undeclared, unbounded, unknown = [], [], []
    for module, files in sorted(_imported_modules().items()):
        if module in sys.stdlib_module_names or module == "scanner":
            continue
        distributions = owners.get(module)
        if not distributions:
            unknown.append(f"{module} ({', '.join(sorted(files))})")
            continue
        for dist in distributions:
            requirement = declared.get(_normal(dist))
            if requirement is None:
                undeclared.append(f"{dist} (imported as {module} in {', '.join(sorted(files))})")
            elif not any(spec.operator in (">=", "==", "~=") for spec in requirement.specifier):
                unbounded.append(str(requirement))
    assert not unknown, f"imported modules no installed distribution provides: {unknown}"
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    assert not unbounded, f"declared without a lower bound: {unbounded}"


def test_pywinrm_is_bounded_to_the_releases_whose_private_functions_are_replaced() -> None:
    pins = [r for r in _requirements() if _normal(r.name) == "pywinrm"]
    assert pins
    for pin in pins:
        assert not pin.specifier.contains(Version("0.4.3")), pin   # setup_encryption(self)
        assert pin.specifier.contains(Version("0.5.0")), pin
        assert not pin.specifier.contains(Version("0.6.0")), pin   # an upper bound: private API
        assert pin.specifier.contains(Version(version("pywinrm"))), f"installed pywinrm is outside {pin}"


def test_the_replaced_pywinrm_functions_keep_their_signatures() -> None:
    from winrm.transport import Transport

    actual = {name: str(inspect.signature(getattr(Transport, name))) for name in PATCHED_SIGNATURES}
    assert actual == PATCHED_SIGNATURES


def test_the_replaced_functions_are_the_ones_winrm_client_replaces() -> None:
    """The list above is the list of what the client assigns on pywinrm's transport."""
    source = (ROOT / "scanner" / "collect" / "winrm_client.py").read_text(encoding="utf-8")
    assigned = set(re.findall(r"\btransport\.(\w+) = .*method-assign", source))
    assert assigned <= set(PATCHED_SIGNATURES), assigned
    assert {"build_session", "setup_encryption"} <= assigned


def test_the_pyspnego_hash_functions_winrm_client_uses_are_there() -> None:
    """winrm_client._ntlm_secret hands pyspnego an NTLM password as its "LM:NT" pair, made
    with pyspnego's own private one-way functions (without them it falls back to the
    password, correct but slower): their signatures as of pyspnego 0.12."""
    from scanner.collect import winrm_client

    assert winrm_client.lmowfv1 is not None and winrm_client.ntowfv1 is not None
    for function in (winrm_client.lmowfv1, winrm_client.ntowfv1):
        assert str(inspect.signature(function)) == "(password: str) -> bytes"
