"""The command line documents itself and README.md documents the command line.

In the style of sqlite-utils' tests/test_docs.py: walk the real click group and check every
command against its own help, the README and the option names design.md fixes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from scanner.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command and subcommand under `group`, with the words that invoke it."""
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found.extend(walk(command, (*path, name)))
    return found


COMMANDS = walk(cli)
LEAVES = [(path, command) for path, command in COMMANDS if not isinstance(command, click.Group)]
IDS = [" ".join(path) for path, _ in COMMANDS]
LEAF_IDS = [" ".join(path) for path, _ in LEAVES]

# Commands without arguments worth showing: their one-line help says it all.
NO_EXAMPLE = {"rules", "db upgrade", "demo"}
EXAMPLE_LEAVES = [(path, command) for path, command in LEAVES if " ".join(path) not in NO_EXAMPLE]

# The command line design.md fixes: options by their long name, then positional arguments.
DESIGN: dict[str, tuple[set[str], list[str]]] = {
    "scan": ({"--inventory", "--db", "--policy", "--concurrency", "--site", "--fail-on", "--timeout"}, []),
    "report": ({"--db", "--run", "--format", "--out", "--lang"}, []),
    "history": ({"--db", "--server", "--protocol"}, []),
    "diff": ({"--db"}, ["run_a", "run_b"]),
    "evidence": ({"--db", "--server", "--protocol", "--run", "--out"}, []),
    "inventory discover": ({"--from", "--out"}, []),
    "rules": (set(), []),
    "db upgrade": ({"--db"}, []),
    "lab serve": ({"--inventory-out"}, ["fleet"]),
    "demo": (set(), []),
}


def command_at(words: tuple[str, ...] | list[str]) -> click.Command:
    command: click.Command = cli
    for word in words:
        assert isinstance(command, click.Group), f"{word!r} under a command that has no subcommands"
        command = command.commands[word]
    return command


def option_names(command: click.Command) -> set[str]:
    return {name for param in command.params if isinstance(param, click.Option)
            for name in (*param.opts, *param.secondary_opts)}


def test_the_walk_finds_every_command_design_md_names() -> None:
    assert set(DESIGN) <= set(LEAF_IDS)
    assert {"inventory", "db", "lab"} <= set(IDS)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_command_has_help_text(path: tuple[str, ...], command: click.Command) -> None:
    assert command.help and command.help.strip(), f"cas-audit {' '.join(path)} has no help text"
    assert command.get_short_help_str(limit=200).strip()


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_command_appears_in_readme(path: tuple[str, ...], command: click.Command) -> None:
    text = "cas-audit " + " ".join(path)
    assert re.search(re.escape(text) + r"(?![\w-])", README), f"README.md does not mention `{text}`"


def test_commands_without_example_exist() -> None:
    assert NO_EXAMPLE <= set(LEAF_IDS)


@pytest.mark.parametrize(("path", "command"), EXAMPLE_LEAVES, ids=[" ".join(p) for p, _ in EXAMPLE_LEAVES])
def test_command_help_has_an_example_that_uses_real_options(path: tuple[str, ...], command: click.Command) -> None:
    name = " ".join(path)
    help_text = command.help or ""
    assert "Example" in help_text, f"cas-audit {name} --help shows no example"
    examples = [line.strip() for line in help_text.splitlines() if f"cas-audit {name}" in line]
    assert examples, f"the example of cas-audit {name} does not run cas-audit {name}"
    for line in examples:
        words = shlex.split(line[line.index("cas-audit"):])
        used = {w.split("=", 1)[0] for w in words if w.startswith("--")}
        assert used <= option_names(command), f"example {line!r} uses unknown options {used - option_names(command)}"


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"], prog_name="cas-audit")
    assert result.exit_code == 0, result.output
    assert "Usage: cas-audit" in result.output
    for name in cli.commands:
        assert re.search(rf"^\s+{re.escape(name)}\s", result.output, re.M), f"{name} missing from --help"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_exits_zero(path: tuple[str, ...], command: click.Command) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="cas-audit")
    assert result.exit_code == 0, result.output
    assert f"Usage: cas-audit {' '.join(path)}" in result.output
    assert result.exception is None


@pytest.mark.parametrize("name", sorted(DESIGN))
def test_options_and_arguments_are_those_of_design_md(name: str) -> None:
    options, arguments = DESIGN[name]
    command = command_at(name.split())
    missing = options - option_names(command)
    assert not missing, f"cas-audit {name} lacks {sorted(missing)}"
    assert [p.name for p in command.params if isinstance(p, click.Argument)] == arguments


@pytest.mark.parametrize("name", sorted(n for n, (options, _) in DESIGN.items() if "--db" in options))
def test_db_option_reads_cas_audit_db(name: str) -> None:
    db = [p for p in command_at(name.split()).params if isinstance(p, click.Option) and "--db" in p.opts]
    assert len(db) == 1 and db[0].envvar == "CAS_AUDIT_DB"


def readme_command_lines() -> list[str]:
    """Every `cas-audit ...` invocation README.md shows, in code blocks or inline code."""
    lines: list[str] = []
    in_block = False
    for raw in README.splitlines():
        if raw.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            code = raw.split(" #", 1)[0].strip()
            if code.startswith("cas-audit "):
                lines.append(code)
        else:
            lines.extend(m for m in re.findall(r"`(cas-audit [^`]+)`", raw))
    return lines


README_LINES = readme_command_lines()


def test_readme_shows_invocations() -> None:
    assert len(README_LINES) >= 8


@pytest.mark.parametrize("line", README_LINES)
def test_readme_invocation_uses_real_commands_and_options(line: str) -> None:
    words = shlex.split(line)[1:]
    command: click.Command = cli
    while words and isinstance(command, click.Group) and words[0] in command.commands:
        command = command.commands[words.pop(0)]
    if isinstance(command, click.Group):
        assert not words or words[0] in ("--help", "-h", "--version"), f"{line!r}: unknown command {words[0]!r}"
        return
    words = [w.lstrip("[") for w in words]  # usage lines write optional parts as [--opt VALUE]
    used = {w.split("=", 1)[0].rstrip("]") for w in words if w.startswith("--")}
    assert used <= option_names(command) | {"--help"}, f"{line!r} uses unknown options {used - option_names(command)}"
