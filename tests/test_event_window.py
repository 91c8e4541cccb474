"""How much of the Application log the collector read, from the simulated server's document
to the observation: read, not read (with Windows' reason), or read in part (a lower
bound). The lab answers as collect.ps1 would; the scan end to end is test_event_log_gaps.py."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

import scanner.collect as collector
from scanner.collect import MAX_EVENTS_ENV_VAR, SINCE_ENV_VAR
from scanner.collect.reader import read_collector_output
from scanner.errors import CollectorOutputError
from scanner.lab.eventlog import DENIED_MESSAGE, WINDOW
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import RefusedLogonFact, SimServer
from scanner.lab.serve import demo_fleet_path
from scanner.lab.simhost import collector_document
from scanner.parse.observe import MAX_EVENTS_ERROR, ServerObservation, interpret

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def server(**changes: object) -> SimServer:
    return replace(load_fleet(demo_fleet_path()).server("CAS01"), **changes)  # type: ignore[arg-type]


def observe(sim: SimServer, **env: str) -> ServerObservation:
    host = read_collector_output(collector_document(sim, env, NOW).encode("utf-8"))
    return interpret(sim.name, "127.0.0.1", None, host, NOW, NOW)


def with_logons(sim: SimServer, count: int, newest: datetime) -> SimServer:
    logons = tuple(RefusedLogonFact(f"CONTOSO\\u{i}", newest - timedelta(seconds=i), "Hamburg") for i in range(count))
    return replace(sim, protocols={**sim.protocols, "pop3": replace(sim.protocols["pop3"], refused_logons=logons)})


def test_a_readable_log_is_read_whole() -> None:
    obs = observe(server())
    assert (obs.events_read, obs.events_error, obs.events_truncated) == (True, None, None)
    assert len(obs.protocols["pop3"].refused_logons) == 2


def test_a_denied_log_is_not_read_with_windows_reason() -> None:
    obs = observe(server(application_log="denied"))
    assert not obs.events_read and obs.events_error == DENIED_MESSAGE
    assert ("events", DENIED_MESSAGE) in obs.collector_errors
    assert all(not p.refused_logons for p in obs.protocols.values())


def test_more_matches_than_listed_are_a_lower_bound() -> None:
    obs = observe(with_logons(server(), 5, NOW), **{MAX_EVENTS_ENV_VAR: "3"})
    assert (obs.events_truncated, obs.events_limit) == ("max", 3)
    assert len(obs.protocols["pop3"].refused_logons) == 3


@pytest.mark.parametrize("since", [None, NOW - timedelta(days=30)])
def test_a_full_window_newer_than_the_cut_off_is_a_lower_bound(since: datetime | None) -> None:
    env = {} if since is None else {SINCE_ENV_VAR: since.strftime("%Y-%m-%dT%H:%M:%SZ")}
    obs = observe(with_logons(server(), WINDOW, NOW), **env)
    assert (obs.events_truncated, obs.events_limit) == ("window", WINDOW)


def test_a_full_window_reaching_back_past_the_cut_off_is_complete() -> None:
    obs = observe(with_logons(server(), WINDOW, NOW),
                  **{SINCE_ENV_VAR: (NOW - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert obs.events_truncated is None
    assert len(obs.protocols["pop3"].refused_logons) == 10


def test_listed_events_from_an_unread_log_are_refused() -> None:
    text = collector_document(server(), {}, NOW).replace(' full="false" error="">', f' full="false" error="{DENIED_MESSAGE}">')
    with pytest.raises(CollectorOutputError, match="could not read"):
        read_collector_output(text.encode("utf-8"))


def test_the_collector_and_the_lab_agree_on_the_window() -> None:
    script = collector.collector_script()
    stage = script[script.index("$stage = 'events'"):script.index("$stage = 'output'")]
    assert f"$win = {WINDOW}" in stage
    # reading and selecting decide error=: $last.m is reset right before and read right after
    assert re.search(r"\$last\.m = ''\s*\n\$all = @\(Get-EventLog -LogName Application -Newest \$win\)\s*\n"
                     r"\$h = @\(\$all \| Where-Object [^\n]*\n"
                     r"if \(\$last\.m -ne ''\) \{ \$lr = \$last\.m; \$all = @\(\); \$h = @\(\) \}", stage)
    assert "(T 'error' $lr)" in stage and "(T 'full' $fu)" in stage


def test_a_huge_reason_is_kept_short() -> None:
    text = collector_document(server(application_log="denied"), {}, NOW).replace(DENIED_MESSAGE, "x" * 100_000)
    host = read_collector_output(text.encode("utf-8"))
    obs = interpret("CAS01", "127.0.0.1", None, host, NOW, NOW)
    assert obs.events_error == "x" * MAX_EVENTS_ERROR
