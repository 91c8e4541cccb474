"""One vocabulary (style.md #13): every closed set of words is a Literal type with the tuple
of its values beside it, and every click Choice is built from one of them, so the command
line, the store and the reports cannot drift apart. Fast: no lab, no database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args

import click
import pytest

from scanner import facts, inventory
from scanner.cli import cmd_fix_apply
from scanner.cli.app import cli
from scanner.collect import ldapclient
from scanner.errors import ConfigError
from scanner.parse import builds
from scanner.store import models

#: (command path, option) -> the vocabulary type its Choice offers.
CHOICES: dict[tuple[str, str], Any] = {
    ("scan", "--fail-on"): facts.Severity,
    ("report", "--format"): facts.ReportFormat,
    ("report", "--lang"): facts.Language,
    ("evidence", "--protocol"): facts.Protocol,
    ("history", "--protocol"): facts.Protocol,
    ("rules", "--lang"): facts.Language,
    ("demo", "--lang"): facts.Language,
    ("preflight", "--format"): facts.PreflightFormat,
    ("inventory discover", "--auth"): inventory.LogonAuth,
    ("inventory discover", "--scheme"): inventory.Scheme,
    ("inventory discover", "--ldap-auth"): ldapclient.Bind,
    ("inventory discover", "--ldap-transport"): ldapclient.Transport,
    ("", "--log-format"): facts.LogFormat,
    ("fix apply", "--restart"): cmd_fix_apply.RestartChoice,
}

#: Each tuple and the type it is read from.
TUPLES: list[tuple[tuple[str, ...], Any]] = [
    (facts.SEVERITIES, facts.Severity),
    (facts.PROTOCOLS, facts.Protocol),
    (facts.LANGUAGES, facts.Language),
    (facts.RUN_STATUSES, facts.RunStatus),
    (facts.FINISHED_STATUSES, facts.FinishedStatus),
    (facts.SCAN_STATUSES, facts.ScanStatus),
    (facts.ERROR_KINDS, facts.ErrorKind),
    (facts.CONFIG_STATUSES, facts.ConfigStatus),
    (facts.BAD_CONFIG_STATUSES, facts.BadConfigStatus),
    (facts.VALUE_SOURCES, facts.ValueSource),
    (facts.REFERENCE_OUTCOMES, facts.ReferenceOutcome),
    (facts.LAUNCH_METHODS, facts.LaunchMethod),
    (facts.NOTE_KINDS, facts.NoteKind),
    (facts.TRUNCATION_REASONS, facts.TruncationReason),
    (facts.FINDING_STATES, facts.FindingState),
    (facts.SCOPE_STATUSES, facts.ScopeStatus),
    (facts.DIFF_STATUSES, facts.DiffStatus),
    (facts.INACTIVE_STATES, facts.InactiveState),
    (facts.WAIVER_STATES, facts.WaiverState),
    (builds.BUILD_CHECKS, builds.BuildCheck),
    (facts.CONTROL_FRAMEWORKS, facts.ControlFramework),
    (facts.CONTROL_MATCHES, facts.ControlMatch),
    (facts.SERVICE_POLICIES, facts.ServicePolicy),
    (facts.REPORT_FORMATS, facts.ReportFormat),
    (facts.PREFLIGHT_FORMATS, facts.PreflightFormat),
    (inventory.AUTHS, inventory.Auth),
    (inventory.LOGON_AUTHS, inventory.LogonAuth),
    (inventory.SCHEMES, inventory.Scheme),
    (ldapclient.BINDS, ldapclient.Bind),
    (ldapclient.TRANSPORTS, ldapclient.Transport),
    (facts.LOG_FORMATS, facts.LogFormat),
]


def _choices(command: click.Command, path: str = "") -> Iterator[tuple[tuple[str, str], tuple[str, ...]]]:
    for param in command.params:
        if isinstance(param.type, click.Choice):
            yield (path, max(param.opts, key=len)), tuple(str(c) for c in param.type.choices)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _choices(sub, f"{path} {name}".strip())


def test_every_choice_offers_exactly_its_vocabulary() -> None:
    found = dict(_choices(cli))
    assert set(found) == set(CHOICES), "a click Choice without a vocabulary type, or a vocabulary without its Choice"
    for key, offered in found.items():
        assert offered == get_args(CHOICES[key]), f"{' '.join(key)} offers {offered}, the type says {get_args(CHOICES[key])}"


@pytest.mark.parametrize(("values", "kind"), TUPLES, ids=[str(kind) for _, kind in TUPLES])
def test_each_tuple_is_its_type(values: tuple[str, ...], kind: Any) -> None:
    assert values == get_args(kind)
    assert len(set(values)) == len(values)


def test_every_report_format_renders_and_nothing_else() -> None:
    """The formats `report --format` offers (facts.REPORT_FORMATS) are exactly those the writer
    renders: each gives bytes, a word outside the vocabulary is refused."""
    from reportdata import sample_report

    from scanner.report.write import render

    report = sample_report("en")
    assert all(render(report, fmt) for fmt in facts.REPORT_FORMATS)
    with pytest.raises(ConfigError, match="pdf"):
        render(report, "pdf")  # type: ignore[arg-type]


def test_finished_and_bad_statuses_are_subsets() -> None:
    assert set(facts.FINISHED_STATUSES) < set(facts.RUN_STATUSES)
    assert set(facts.BAD_CONFIG_STATUSES) == set(facts.CONFIG_STATUSES) - {"ok"}
    assert set(inventory.LOGON_AUTHS) < set(inventory.AUTHS)
    assert set(facts.INACTIVE_STATES) < set(facts.FINDING_STATES)


def test_the_store_constrains_columns_to_the_vocabulary() -> None:
    """The CHECK constraints of the history are written from the same tuples."""
    checks = {
        (table.name, constraint.name): str(constraint.sqltext)
        for table in models.Base.metadata.tables.values()
        for constraint in table.constraints
        if constraint.__class__.__name__ == "CheckConstraint"
    }
    by_column = {"status": facts.RUN_STATUSES, "scan_status": facts.SCAN_STATUSES, "method": facts.LAUNCH_METHODS}
    seen = set()
    for (_, name), text in checks.items():
        for column, values in by_column.items():
            if name and str(name).endswith(column) and text.startswith(f"{column} IN"):
                assert text == f"{column} IN ({', '.join(repr(v) for v in values)})"
                seen.add(column)
    assert seen == set(by_column)


def test_word_reads_a_stored_word_back_or_names_the_vocabulary() -> None:
    assert facts.word(facts.RUN_STATUSES, "partial") == "partial"
    with pytest.raises(ValueError, match="complete"):
        facts.word(facts.RUN_STATUSES, "completed")
