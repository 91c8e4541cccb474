"""The command line documents itself and README.md documents the command line.

In the style of sqlite-utils' tests/test_docs.py: walk the real click group and check every
command against its own help, the README and the option names docs/contracts.md fixes.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from scanner.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


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

# The command line docs/contracts.md fixes: options by their long name, then positional arguments.
DESIGN: dict[str, tuple[set[str], list[str]]] = {
    "scan": ({"--inventory", "--db", "--policy", "--concurrency", "--site", "--fail-on", "--timeout"}, []),
    "report": ({"--db", "--run", "--format", "--out", "--lang"}, []),
    "history": ({"--db", "--server", "--protocol"}, []),
    "diff": ({"--db"}, ["run_a", "run_b"]),
    "evidence": ({"--db", "--server", "--protocol", "--run", "--out"}, []),
    "inventory discover": ({"--from", "--ldap", "--base", "--out"}, []),
    "rules": (set(), []),
    "db upgrade": ({"--db"}, []),
    "lab serve": ({"--inventory-out"}, ["fleet"]),
    "demo": (set(), []),
    "fix plan": ({"--db", "--run", "--policy", "--rule", "--server", "--out"}, []),
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


def test_the_walk_finds_every_command_contracts_doc_names() -> None:
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


def examples(help_text: str) -> list[str]:
    """The `cas-audit ...` lines under "Example" headings of a help text (env assignments dropped)."""
    found: list[str] = []
    in_example = False
    for raw in help_text.splitlines():
        line = raw.strip()
        if line.startswith("Example"):
            in_example = True
            continue
        if in_example and "cas-audit " in line:
            found.append(line[line.index("cas-audit "):])
        elif in_example and line and not line.startswith("cas-audit"):
            in_example = False
    return found


def parse_invocation(line: str) -> click.Context:
    """Parse a `cas-audit ...` line with the real click group, as the shell would run it:
    unknown options, bad choices, missing required options or arguments raise UsageError."""
    words = shlex.split(line)
    assert words[0] == "cas-audit", line
    ctx = cli.make_context("cas-audit", words[1:], resilient_parsing=False)
    command: click.Command = cli
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args; 9.0 moves them to args
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*ctx.protected_args, *ctx.args]
        if not rest:
            return ctx
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None, f"{line!r}: no command {rest[:1]}"
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        command = sub
    return ctx


@pytest.mark.parametrize(("path", "command"), COMMANDS + [((), cli)], ids=[*IDS, "cas-audit"])
def test_every_command_help_has_an_example_that_parses(path: tuple[str, ...], command: click.Command) -> None:
    """Walks the whole group, so a command added later needs an example too."""
    name = " ".join(("cas-audit", *path))
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="cas-audit")
    assert "Example" in result.output, f"{name} --help shows no example"
    lines = examples(command.help or "")
    assert lines, f"the example of {name} runs no cas-audit command"
    assert any(line.startswith(name) for line in lines), f"no example of {name} runs {name}"
    for line in lines:
        try:
            parse_invocation(line)
        except click.UsageError as exc:
            pytest.fail(f"{name}: example {line!r} does not parse: {exc.format_message()}")


def test_parse_invocation_refuses_what_click_refuses() -> None:
    """The example check would notice an unknown option, a bad choice or a missing --out."""
    for bad in ("cas-audit scan --inventory x.toml --fail-on severe", "cas-audit report --colour",
                "cas-audit evidence --server A --protocol pop3", "cas-audit nosuch"):
        with pytest.raises(click.UsageError):
            parse_invocation(bad)


def test_version_says_more_than_the_version() -> None:
    from importlib.metadata import version

    from scanner import __version__

    result = CliRunner().invoke(cli, ["--version"], prog_name="cas-audit")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # the first line is what click's version_option printed before, for scripts reading it
    assert lines[0] == f"cas-audit, version {__version__}"
    assert __version__ == version("cas-audit")
    assert re.match(r"Python 3\.\d+\.\d+ ", lines[1])
    for dist in ("pywinrm", "pyspnego", "SQLAlchemy", "lxml"):
        assert f"{dist} {version(dist)}" in result.output
    assert re.search(r"^extras: kerberos (yes|no), postgresql (yes|no)$", result.output, re.M)


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
def test_options_and_arguments_are_those_of_contracts_doc(name: str) -> None:
    options, arguments = DESIGN[name]
    command = command_at(name.split())
    missing = options - option_names(command)
    assert not missing, f"cas-audit {name} lacks {sorted(missing)}"
    assert [p.name for p in command.params if isinstance(p, click.Argument)] == arguments


@pytest.mark.parametrize("name", sorted(n for n, (options, _) in DESIGN.items() if "--db" in options))
def test_db_option_reads_cas_audit_db(name: str) -> None:
    db = [p for p in command_at(name.split()).params if isinstance(p, click.Option) and "--db" in p.opts]
    assert len(db) == 1 and db[0].envvar == "CAS_AUDIT_DB"


INVOCATION = re.compile(r"^(?:[A-Z_]+=\S*\s+)*(?:\S*[/\\])?cas-audit(?:\.exe)?(\s.*)$")


def invocation(line: str) -> str | None:
    """`line` as a `cas-audit ...` command when it runs cas-audit: environment assignments
    and the install path (/opt/cas-audit/bin/, C:\\cas-audit\\venv\\Scripts\\....exe) dropped."""
    match = INVOCATION.match(line.strip())
    return "cas-audit" + match.group(1).rstrip() if match else None


def readme_command_lines(text: str = README) -> tuple[list[str], list[str]]:
    """Every `cas-audit ...` invocation a Markdown text shows: (lines of code blocks, inline code)."""
    blocks: list[str] = []
    inline: list[str] = []
    in_block = False
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            code = invocation(raw.split(" #", 1)[0])
            if code:
                blocks.append(code)
        else:
            inline.extend(m for m in re.findall(r"`(cas-audit [^`]+)`", raw))
    return blocks, inline


README_BLOCK_LINES, README_INLINE = readme_command_lines()
# the other user documentation whose command lines must run as written
DOCS = [ROOT / "docs" / "quickstart.md"]
for _doc in DOCS:
    _blocks, _inline = readme_command_lines(_doc.read_text(encoding="utf-8"))
    README_BLOCK_LINES += _blocks
    README_INLINE += _inline
README_LINES = README_BLOCK_LINES + README_INLINE


@pytest.mark.parametrize("line", README_BLOCK_LINES)
def test_readme_command_lines_parse(line: str) -> None:
    """A command line the README shows in a code block runs as written (placeholders aside)."""
    try:
        parse_invocation(line)
    except click.exceptions.Exit:  # --version, --help
        pass
    except click.UsageError as exc:
        pytest.fail(f"README.md: {line!r} does not parse: {exc.format_message()}")


def test_readme_shows_invocations() -> None:
    assert len(README_LINES) >= 8


@pytest.mark.parametrize("line", README_LINES)
def test_readme_invocation_uses_real_commands_and_options(line: str) -> None:
    words = shlex.split(line)[1:]
    command: click.Command = cli
    while words and isinstance(command, click.Group):
        group_options = {o: p for p in command.params if isinstance(p, click.Option) for o in p.opts}
        if words[0].split("=", 1)[0] in group_options:  # --quiet, --log-format json
            option = group_options[words.pop(0).split("=", 1)[0]]
            if not option.is_flag and words:
                words.pop(0)
            continue
        if words[0] not in command.commands:
            break
        command = command.commands[words.pop(0)]
    if isinstance(command, click.Group):
        assert not words or words[0] in ("--help", "-h", "--version"), f"{line!r}: unknown command {words[0]!r}"
        return
    words = [w.lstrip("[") for w in words]  # usage lines write optional parts as [--opt VALUE]
    used = {w.split("=", 1)[0].rstrip("]") for w in words if w.startswith("--")}
    assert used <= option_names(command) | {"--help"}, f"{line!r} uses unknown options {used - option_names(command)}"


REPO_PATH = re.compile(r"`((?:scanner|docs|tests|rules|migrations|bench|scripts)/[^`\s<>]*)`")


@pytest.mark.parametrize("doc", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_files_the_docs_name_exist(doc: Path) -> None:
    """A path in backticks (`scanner/cli/`, `docs/scheduling/cas-audit.timer`) is in the repository."""
    named = REPO_PATH.findall(doc.read_text(encoding="utf-8"))
    assert named
    missing = [p for p in named if not any(ROOT.glob(p.rstrip("/")))]
    assert not missing, f"{doc.name} names files that do not exist: {missing}"
