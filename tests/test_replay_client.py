"""The scanner's WinRM client against exchanges recorded from real Windows servers.

Only the HTTP layer is stubbed (tests/replaylib.py): pywinrm, scanner.collect.winrm_client
and everything above run unmodified and receive the bytes Windows sent. The recordings are
the project's own copies in tests/replay/ (each cites its source).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import pytest
import replaylib
from replaylib import NS, load, parse, replaying
from winrm.exceptions import WSManFaultError
from winrm.protocol import Protocol

from scanner import collect
from scanner.collect import winrm_client
from scanner.errors import CollectionError
from scanner.inventory import Target


def target(port: int) -> Target:
    """A Basic-over-HTTP target on the loopback replay server."""
    return Target(name="CAS01", address="127.0.0.1", site=None, username="auditor", auth="basic",
                  scheme="http", port=port, verify_tls=False, ca_bundle=None, allow_insecure=True,
                  cert_pem=None, cert_key_pem=None)


def run(recording: str, **kw: object) -> tuple[winrm_client.CommandOutput | CollectionError, replaylib.Replay]:
    """run_collector against a recording: its result or the CollectionError it raised."""
    with replaying(load(recording), **kw) as replay:  # type: ignore[arg-type]
        try:
            result: winrm_client.CommandOutput | CollectionError = winrm_client.run_collector(
                target(replay.port), "lab-password", script="Write-Output hi", env={}, timeout_s=30)
        except CollectionError as exc:
            result = exc
    return result, replay


def protocol(replay: replaylib.Replay) -> Protocol:
    return Protocol(replay.endpoint, transport="plaintext", username="auditor",  # type: ignore[arg-type]
                    password="lab-password", read_timeout_sec=30, operation_timeout_sec=20,
                    proxy=None, ca_trust_path=None)  # type: ignore[arg-type]


# -- the fixtures themselves ------------------------------------------------------------------


@pytest.mark.parametrize("name", replaylib.names())
def test_fixture_cites_its_recording_and_is_well_formed(name: str) -> None:
    recording = load(name)
    source = recording.source
    assert source["repository"] in ("jborean93/pypsrp", "WinRb/WinRM")
    assert source["path"].startswith("tests/")
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert source["server"] and source["cut"]
    assert recording.exchanges
    for exchange in recording.exchanges:
        if exchange.request:
            assert replaylib.action_of(exchange.request) == exchange.action
        answer = replaylib.action_of(exchange.response)
        assert answer in (f"{exchange.action}Response", "fault"), (exchange.action, answer)
        assert (answer == "fault") == (exchange.status != 200)


def test_every_required_recording_is_reproduced() -> None:
    required = {"winrs_standard", "winrs_stderr_rc", "winrs_no_cmd_shell", "winrs_bad_cmd_id",
                "winrs_fail_poll_process", "winrs_environment", "winrs_unicode", "winrs_send",
                "wsman_update_envelope_size_150"}
    assert required <= set(replaylib.names())
    for name in required:
        assert load(name).source["path"] == f"tests/responses/test_{name}.yml"


# -- run_collector, the collection path ---------------------------------------------------------


def test_standard_output_and_exit_code() -> None:
    result, replay = run("winrs_standard")
    assert replay.problems == []
    assert isinstance(result, winrm_client.CommandOutput)
    assert (result.stdout, result.stderr, result.exit_code) == (b"hi\r\n", b"", 0)
    # Create, Command, Receive until Done, Delete: the recorded Signal is not needed.
    assert replay.served == ["Create", "Command", "Receive", "Delete"]


def test_stderr_and_nonzero_exit_code_are_kept_apart() -> None:
    result, replay = run("winrs_stderr_rc")
    assert replay.problems == []
    assert isinstance(result, winrm_client.CommandOutput)
    assert (result.stdout, result.stderr, result.exit_code) == (b"out \r\n", b"err \r\n", 1)
    assert winrm_client.stderr_summary(result.stderr) == "err"


def test_failing_collector_is_reported_with_exit_code_and_stderr() -> None:
    """The full collection path: a collector that exits 1 having written to stderr gives a
    script-error naming the server, the exit code and what it wrote."""
    methods: list[str] = []
    with replaying(load("winrs_stderr_rc")) as replay:
        with pytest.raises(CollectionError) as caught:
            winrm_client.collect_host(target(replay.port), "lab-password", since=datetime(2026, 1, 1, tzinfo=UTC),
                                      timeout_s=30, on_method=methods.append)
    assert replay.problems == []
    assert caught.value.kind == "script-error"
    assert str(caught.value) == "the collector failed on CAS01 (exit code 1): err"
    assert methods == ["env"]


def test_bare_program_under_skip_cmd_shell_is_reported_as_the_windows_fault() -> None:
    """Windows refuses a bare program name under WINRS_SKIP_CMD_SHELL (no PATH search): the
    collection fails with the fault's code and Windows' own sentence, and the shell is still
    deleted. Whatever program the client launches, this is what such a server answers the
    first Command of the recording with. (The recorded client went on with a full-path
    launch; a client that stops at the fault goes straight to Delete.)"""
    result, replay = run("winrs_no_cmd_shell", optional=("Command", "Receive", "Signal"))
    assert replay.problems == []
    assert isinstance(result, CollectionError)
    assert result.kind == "soap-fault"
    assert "(code 2147942402)" in str(result)
    assert "The system cannot find the file specified." in str(result)
    assert replay.served[0] == "Create" and replay.served[1] == "Command"
    assert replay.served[-1] == "Delete"


def test_unknown_command_id_is_a_clear_error() -> None:
    """The recording's Receive names a CommandId the server does not know (ids are not
    checked here: the recorded request named another one on purpose)."""
    result, replay = run("winrs_bad_cmd_id", check_ids=False)
    assert replay.problems == []
    assert isinstance(result, CollectionError) and result.kind == "soap-fault"
    text = str(result)
    assert "(code 2150858843)" in text
    assert "command identifier that does not exist" in text
    assert replay.served == ["Create", "Command", "Receive", "Delete"]


def test_unicode_output_decodes() -> None:
    result, replay = run("winrs_unicode")
    assert replay.problems == []
    assert isinstance(result, winrm_client.CommandOutput)
    assert result.stdout.decode("utf-8") == "こんにちは\n"
    # The recorded client asked for code page 65001; this client asks for 437 (65001 breaks
    # cmd.exe before 2008 R2, docs/launch.md) and the raw UTF-8 bytes decode all the same.
    create = parse(replay.sent[0])
    assert replaylib.options(create)["WINRS_CODEPAGE"] == str(collect.SHELL_CODEPAGE) == "437"


def test_requests_fit_the_recorded_envelope_limit() -> None:
    """The recorded server's MaxEnvelopeSizekb is 150: every request of a collection,
    the Create carrying the collector script included, stays within 150 KiB, and the
    client asks for no larger answers than that."""
    config = parse(load("wsman_update_envelope_size_150").first("Get").response)
    limit_kb = int(config.find(".//{http://schemas.microsoft.com/wbem/wsman/1/config}MaxEnvelopeSizekb").text)  # type: ignore[union-attr]
    assert limit_kb == 150
    script = collect.collector_script()
    with replaying(load("winrs_standard")) as replay:
        winrm_client.run_collector(target(replay.port), "lab-password", script=script,
                                   env={collect.SINCE_ENV_VAR: "2026-01-01T00:00:00Z"}, timeout_s=30)
    assert replay.problems == []
    assert replay.served == ["Create", "Command", "Receive", "Delete"]
    for body in replay.sent:
        assert len(body) <= limit_kb * 1024
        assert int(replaylib.text_of(parse(body), "s:Header/w:MaxEnvelopeSize")) <= limit_kb * 1024


def test_stdin_launch_sends_the_script_and_closes_stdin() -> None:
    """The stdin launch (for servers that ignore shell variables) against the recorded
    stdin exchange: the script goes in Send requests of the recorded shape, the last one
    closing stdin (End="true"), and the output is what PowerShell printed. The recorded
    client sent its script in two Sends; one is enough here, so the second may be passed."""
    with replaying(load("winrs_send"), optional=("Send", "Signal")) as replay:
        result = winrm_client.run_collector(target(replay.port), "lab-password", script="Write-Output hi",
                                            env={}, timeout_s=30, method="stdin")
    assert replay.problems == []
    assert (result.stdout, result.stderr, result.exit_code, result.method) == (b"output 1\noutput 2\n", b"", 0,
                                                                               "stdin")
    assert replay.served[:3] == ["Create", "Command", "Send"] and replay.served[-2:] == ["Receive", "Delete"]
    sends = [parse(b).find(".//rsp:Send/rsp:Stream", NS) for b in replay.sent if replaylib.action_of(b) == "Send"]
    assert sends and all(s is not None and s.get("Name") == "stdin" for s in sends)
    assert (sends[-1].get("End") or "").lower() == "true"  # type: ignore[union-attr]
    assert b"Write-Output hi" in b"".join(base64.b64decode(s.text or "") for s in sends)  # type: ignore[union-attr]
    # stdin is a pipe, not a console ([MS-WSMV] 3.1.4.11; Ansible's WinRM connection does the same)
    command = next(parse(b) for b in replay.sent if replaylib.action_of(b) == "Command")
    assert replaylib.options(command)["WINRS_CONSOLEMODE_STDIN"] == "FALSE"


# -- pywinrm's Protocol as the client builds it ---------------------------------------------------


def test_receive_without_command_is_refused_with_invalid_parameter() -> None:
    """Windows answers a Receive its shell cannot serve with fault 87 from the shell plugin;
    the client reports it as a soap-fault naming the code and the text."""
    with replaying(load("winrs_fail_poll_process"), check_ids=False) as replay:
        p = protocol(replay)
        shell_id = p.open_shell()
        assert shell_id == "8ABEA8D2-0438-4D75-A594-55DCA786B4E1"
        with pytest.raises(WSManFaultError) as caught:
            p.get_command_output_raw(shell_id, "")
        p.close_shell(shell_id)
    assert replay.problems == []
    assert caught.value.wsman_fault_code == 87
    error = winrm_client._translate(target(1), caught.value)
    assert error.kind == "soap-fault"
    assert "(code 87)" in str(error) and "The parameter is incorrect." in str(error)


def test_environment_variables_travel_as_recorded() -> None:
    """Shell variables are sent as rsp:Environment/rsp:Variable, special characters and
    all, exactly as the recorded client sent them; the server's `set` output shows them."""
    recording = load("winrs_environment")
    recorded = parse(recording.first("Create").request)
    variables = {v.get("Name"): v.text for v in recorded.iterfind(".//rsp:Variable", NS)}
    assert len(variables) == 3
    with replaying(recording) as replay:
        p = protocol(replay)
        shell_id = p.open_shell(env_vars=variables)  # type: ignore[arg-type]
        command_id = p.run_command(shell_id, "cmd.exe", ["/c", "set"])
        out, err, code = p.get_command_output(shell_id, command_id)
        p.close_shell(shell_id)
    assert replay.problems == []
    sent = {v.get("Name"): v.text for v in parse(replay.sent[0]).iterfind(".//rsp:Variable", NS)}
    assert sent == variables
    text = out.decode("utf-8")
    assert "env1=var1\r\n" in text and "1234=5678\r\n" in text
    assert '_-(){}[]<>*+-/\\?"!@#$^&|;:i,.`~0=_-(){}[]<>*+-/\\?"!@#$^&|;:i,.`~0\r\n' in text
    assert (err, code) == (b"", 0)


def test_stdin_sent_and_closed_as_recorded() -> None:
    """pywinrm's Send has the recorded shape (rsp:Stream Name=stdin, CommandId, End), and
    PowerShell reading a script from stdin finishes once stdin is closed."""
    recording = load("winrs_send")
    with replaying(recording) as replay:
        p = protocol(replay)
        shell_id = p.open_shell()
        command_id = p.run_command(shell_id, "powershell.exe", ["-"])
        p.send_command_input(shell_id, command_id, b'Write-Host "output 1";')
        p.send_command_input(shell_id, command_id, b'Write-Host "output 2";', end=True)
        out, err, code = p.get_command_output(shell_id, command_id)
        p.cleanup_command(shell_id, command_id)
        p.close_shell(shell_id)
    assert replay.problems == []
    assert replay.served == ["Create", "Command", "Send", "Send", "Receive", "Signal", "Delete"]
    for sent, exchange in zip(replay.sent[2:4], [e for e in recording.exchanges if e.action == "Send"],
                              strict=True):
        got = parse(sent).find(".//rsp:Send/rsp:Stream", NS)
        want = parse(exchange.request).find(".//rsp:Send/rsp:Stream", NS)
        assert got is not None and want is not None
        assert got.get("Name") == want.get("Name") == "stdin"
        assert (got.get("End") or "").lower() == (want.get("End") or "").lower()
        assert base64.b64decode(got.text or "") == base64.b64decode(want.text or "")
    assert (out, err, code) == (b"output 1\noutput 2\n", b"", 0)


# -- WinRM 1.1 ------------------------------------------------------------------------------------


def test_winrm_11_shell_id_keeps_its_uuid_prefix() -> None:
    """WinRM 1.1 hands out `uuid:`-prefixed ShellIds and the anonymous address; the client
    takes the id verbatim (and would send it back so)."""
    stubs = load("winrb_v1_stubs")
    v1 = replaylib.Recording("v1", stubs.source, (stubs.exchanges[0],))
    with replaying(v1) as replay:
        shell_id = protocol(replay).open_shell()
    assert replay.problems == [] and replay.served == ["Create"]
    assert shell_id == "uuid:739990FF-1492-4CDD-80BB-6E07ADB06D85"


def test_winrm_11_nested_fault_is_reported_readably() -> None:
    """WinRM 1.1 nests a WSManFault inside the provider fault and indents its reason over
    several lines. Only the fault body is recorded (for an Enumerate request); it is served
    here to a Create to exercise the client's fault parsing, nothing more."""
    stubs = load("winrb_v1_stubs")
    fault = stubs.exchanges[2]
    as_create = replaylib.Exchange("Create", fault.status, "", fault.response, fault.path)
    with replaying(replaylib.Recording("v1-fault", stubs.source, (as_create,))) as replay:
        with pytest.raises(WSManFaultError) as caught:
            protocol(replay).open_shell()
    assert replay.problems == []
    error = winrm_client._translate(target(1), caught.value)
    assert error.kind == "soap-fault"
    assert "(code 2150858778)" in str(error)
    assert ("The data source could not process the filter. The filter might be missing or it might be "
            "invalid. Change the filter and try the request again.") in str(error)
    assert "\n" not in str(error)
