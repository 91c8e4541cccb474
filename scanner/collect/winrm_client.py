"""Run the collector on one CAS over WinRM.

Only this module imports `winrm`; every connection pywinrm opens is opened by
`httpguard`'s transport adapter, the one place a byte leaves for a server. The launch is described in docs/launch.md and
`scanner.collect`. Common path ("env"): Create (shell with the script in an environment
variable), Command (through cmd.exe, PowerShell by its %SystemRoot% path, stdin closed),
Receive until Done, Delete: 4 HTTP requests with Basic or Kerberos, 7 with NTLM on a fresh
connection (3 for the handshake). If the server ignored the shell's environment, the
bootstrap says so and, in the same shell, the "stdin" launch follows: Command, Send (the
script, End="true"), Receive: 3 requests more, on that server only. A caller that
remembers "stdin" for a server goes straight to it (Create, Command, Send, Receive,
Delete). pywinrm retries an operation timeout while receiving forever; the loop here
keeps a wall-clock deadline and an output cap of its own. Below pywinrm, `httpguard` holds
the same deadline for every HTTP exchange (a trickling or endless response included) and
caps each response body while it streams.

Kerberos (auth = "kerberos"): pywinrm's `kerberos` transport with message encryption
("auto": always on plain http), the service principal HTTP/<address>, so the inventory
addresses the server by the FQDN of its computer account. The ticket comes from kinit's
cache, or from the password (scanner/collect/kerberos.py); its failures become one
sentence each. 5 requests per collection: one empty POST carries the Kerberos token
(tests/test_kerberos.py counts them).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from xml.etree import ElementTree

import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

try:  # pyspnego's NTLM one-way functions (_ntlm_secret); without them the password goes as it is
    from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1
except ImportError:  # pragma: no cover - a pyspnego that moved them
    lmowfv1 = ntowfv1 = None  # type: ignore[assignment]

from scanner import collect as collector
from scanner.collect import httpguard, httpwire, kerberos, retry, wsman_messages
from scanner.collect.retry import ConnectionRefused, on_each_port
from scanner.collect.shelltext import fault_message, printable
from scanner.collect.shelltext import shell_codec as shell_codec
from scanner.collect.shelltext import stderr_summary as stderr_summary
from scanner.errors import CollectionError, CollectorOutputError
from scanner.facts import LaunchMethod
from scanner.inventory import Target

log = logging.getLogger(__name__)
MAX_OUTPUT_BYTES = 8 * 1024 * 1024
# One HTTP response: a Receive envelope carries output base64-encoded (4/3), plus the
# envelope and, with NTLM, the encryption framing.
MAX_RESPONSE_BYTES = MAX_OUTPUT_BYTES * 2 + 1024 * 1024
OPERATION_TIMEOUT_S = 20
#: Script bytes per Send request: far below the 150 KB MaxEnvelopeSize of WinRM 1.1
#: after base64 (4/3) and the envelope around it (docs/lab.md, "Platforms").
SEND_CHUNK_BYTES = 64 * 1024
_TRANSPORTS = {"ntlm": "ntlm", "kerberos": "kerberos", "certificate": "certificate"}
# pywinrm's vendored requests_kerberos logs every GSS failure with a traceback (log.exception);
# the failure reaches us as an exception and becomes one sentence, so its log stays quiet.
logging.getLogger("winrm.vendor.requests_kerberos").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class CommandOutput:
    stdout: bytes
    stderr: bytes
    exit_code: int
    method: LaunchMethod = "env"  # how the script reached PowerShell (scanner.collect)


def _transport(target: Target) -> str:
    if target.auth == "basic":
        return "ssl" if target.scheme == "https" else "plaintext"
    return _TRANSPORTS[target.auth]


class _Protocol(Protocol):
    """pywinrm's Protocol whose requests are written by wsman_messages: the bytes pywinrm
    0.5.0 sends, without xmltodict's cost (tests/test_wsman_messages.py compares them). The
    header is wsman_messages.envelope's, not build_wsman_header's dict: the same fields, the
    same `operation_timeout_sec` read from this Protocol."""

    def open_shell(self, i_stream: str = "stdin", o_stream: str = "stdout stderr", working_directory: str | None = None,
                   env_vars: dict[str, str] | None = None, noprofile: bool = False, codepage: int = 437,
                   lifetime: None = None, idle_timeout: str | int | None = None) -> str:
        return wsman_messages.shell_id(self.send_message(wsman_messages.create(
            self.operation_timeout_sec, i_stream=i_stream, o_stream=o_stream, working_directory=working_directory,
            env_vars=env_vars, noprofile=noprofile, codepage=codepage, idle_timeout=idle_timeout)))

    def run_command(self, shell_id: str, command: str, arguments: Iterable[str | bytes] = (),
                    console_mode_stdin: bool = True, skip_cmd_shell: bool = False) -> str:
        words = [a if isinstance(a, str) else a.decode("utf-8") for a in arguments] if arguments else None
        return wsman_messages.command_id(self.send_message(wsman_messages.command(
            self.operation_timeout_sec, shell_id, command, words, console_mode_stdin=console_mode_stdin,
            skip_cmd_shell=skip_cmd_shell)))

    def send_command_input(self, shell_id: str, command_id: str, stdin_input: str | bytes, end: bool = False) -> None:
        data = stdin_input.encode("437") if isinstance(stdin_input, str) else stdin_input
        self.send_message(wsman_messages.send(self.operation_timeout_sec, shell_id, command_id, data, end=end))

    def get_command_output_raw(self, shell_id: str, command_id: str) -> tuple[bytes, bytes, int, bool]:
        return wsman_messages.output(self.send_message(wsman_messages.receive(
            self.operation_timeout_sec, shell_id, command_id)))

    def close_shell(self, shell_id: str, close_session: bool = True) -> None:
        message_id = uuid.uuid4()
        try:
            relates_to = wsman_messages.relates_to(self.send_message(wsman_messages.delete(
                self.operation_timeout_sec, shell_id, message_id)))
        finally:
            if close_session:
                self.transport.close_session()
        assert uuid.UUID(relates_to.replace("uuid:", "")) == message_id  # as pywinrm checks it


@functools.lru_cache(maxsize=16)
def _ntlm_secret(password: str) -> str:
    """The password as pyspnego's "LM:NT" hash pair, computed with pyspnego's own functions:
    it takes that form for the password itself (spnego's README, "NTLM hash"), and would
    otherwise derive both hashes again for every server (a DES in pure Python: 0.3 ms of CPU
    a server; bench/README.md, "CPU per server")."""
    if lmowfv1 is None or ntowfv1 is None:
        return password
    return f"{lmowfv1(password).hex()}:{ntowfv1(password).hex()}"


def _protocol(target: Target, password: str | None, timeout_s: float) -> Protocol:
    if target.auth == "kerberos":
        from winrm.transport import HAVE_KERBEROS

        if not HAVE_KERBEROS:
            raise CollectionError("internal", "auth = \"kerberos\" needs pykerberos: install cas-audit's kerberos "
                                  "extra (pip install 'cas-audit[kerberos]')")
        kerberos.ensure_ticket(target.username, password, host=target.address)
    elif target.auth != "certificate" and not password:
        raise CollectionError("auth", f"no password for {target.username or 'the account'} of {target.name}")
    operation = max(1, min(OPERATION_TIMEOUT_S, int(timeout_s) - 1))
    kwargs: dict[str, object] = {
        "endpoint": target.endpoint,
        "transport": _transport(target),
        "username": target.username or None,
        "password": password,
        "server_cert_validation": "validate" if target.verify_tls else "ignore",
        "operation_timeout_sec": operation,
        "read_timeout_sec": operation + 5,
        "message_encryption": "auto",
        # Channel binding ties the logon to the TLS certificate: there is none over http,
        # where pywinrm's Kerberos would warn on every logon that it found no certificate
        "send_cbt": target.scheme == "https",
    }
    if target.auth == "ntlm" and password:
        kwargs["password"] = _ntlm_secret(password)
    # The inventory's ca_bundle, else the CA certificates requests ships; never an
    # environment variable nobody sees in the inventory (pywinrm's 'legacy_requests').
    kwargs["ca_trust_path"] = target.ca_bundle or None
    if target.auth == "certificate":
        kwargs["cert_pem"] = target.cert_pem
        kwargs["cert_key_pem"] = target.cert_key_pem
    if target.auth == "kerberos":
        # SPN HTTP/<address>: the address must be the FQDN the computer account is registered
        # under (scanner/inventory.py refuses IP addresses for Kerberos). The password, if any,
        # already became a ticket above; pywinrm's Kerberos reads only the credential cache.
        kwargs["kerberos_hostname_override"] = None
        kwargs["password"] = None
        # Delegation (GSS_C_DELEG_FLAG) hands the server a forwardable ticket, so what runs
        # there may reach a domain controller in the user's name: `inventory discover --from`.
        kwargs["kerberos_delegation"] = target.delegate
    try:
        return _Protocol(**kwargs)  # type: ignore[arg-type]  # kwargs built from the inventory
    except WinRMError as exc:
        raise CollectionError("internal", f"cannot set up WinRM for {target.name}: {exc}") from None


def _guard(protocol: Protocol, guard: httpguard.Guard) -> None:
    """Route every request pywinrm makes for `protocol` through `guard`.

    pywinrm creates its requests Session lazily and, for NTLM over http, sends the first
    (encryption set-up) request from inside `build_session`; the guard is mounted on the
    Session before that request and after the Session exists."""
    transport = protocol.transport
    build_session = transport.build_session
    setup_encryption = transport.setup_encryption

    def guarded_setup(session: requests.Session) -> None:
        httpguard.install(session, guard)
        session.trust_env = False  # build_session has resolved the proxy (see guarded_build)
        setup_encryption(session)

    def guarded_build() -> requests.Session:
        session = transport.session
        if session is None:
            session = build_session()
            # build_session resolved the environment's proxy for this endpoint into
            # session.proxies once; requests would look it up again on every request
            # (a third of a collection's CPU: bench/README.md, "CPU per server")
            session.trust_env = False
            session.prepare_request = httpguard.prepare_once(session)  # type: ignore[method-assign,assignment]
            kerberos.bind_to_tls(session, https=transport.endpoint.lower().startswith("https:"))
        httpguard.install(session, guard)
        return session

    transport.setup_encryption = guarded_setup  # type: ignore[method-assign]
    transport.build_session = guarded_build  # type: ignore[method-assign]


def _set_read_timeout(protocol: Protocol, deadline: float) -> None:
    """Shrink the HTTP read timeout so no single request outlives the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise CollectionError("timeout", "no answer within the per-server time limit")
    protocol.transport.read_timeout_sec = max(0.5, min(float(protocol.read_timeout_sec), remaining))  # type: ignore[assignment]


_FAULT_TEXT_LIMIT = 500


def _translate(target: Target, exc: BaseException) -> CollectionError:
    """Turn what pywinrm and requests raise into one CollectionError kind with a sentence."""
    where = f"{target.endpoint}"
    if isinstance(exc, CollectionError):
        return exc
    if target.auth == "kerberos" and type(exc).__name__ in ("KerberosExchangeError", "MutualAuthenticationError"):
        return kerberos.failure(str(exc), user=target.username, host=target.address)
    if target.auth == "kerberos" and isinstance(exc, InvalidCredentialsError):
        # The server refused a ticket the KDC issued: its answer carries no reason (a bare 401).
        return CollectionError("auth", kerberos.refused_by_server(target.username, target.address))
    if isinstance(exc, InvalidCredentialsError):
        return CollectionError("auth", f"{where} rejected the credentials of {target.username}",
                               hint="check the user name, CAS_AUDIT_PASSWORD and the auth method")
    if isinstance(exc, WSManFaultError):
        code = f" (code {exc.wsman_fault_code})" if exc.wsman_fault_code is not None else ""
        reason = printable(" ".join(str(exc.reason or "").split()))
        detail = fault_message(exc.response)
        if detail and detail not in reason:
            reason = f"{reason} {detail}".strip()
        reason = reason[:_FAULT_TEXT_LIMIT] + ("..." if len(reason) > _FAULT_TEXT_LIMIT else "")
        return CollectionError("soap-fault", f"{where} answered a WS-Management fault{code}: {reason}")
    if isinstance(exc, requests.exceptions.SSLError):
        return CollectionError("tls", f"TLS with {where} failed: certificate not trusted or handshake refused",
                               hint="set ca_bundle, or verify_tls = false for a lab")
    if isinstance(exc, (requests.exceptions.ReadTimeout, requests.exceptions.ConnectTimeout)):
        return CollectionError("timeout", f"{where} did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = repr(exc)
        if "refused" in text.lower() or "Errno 111" in text:
            return ConnectionRefused(f"{where} refused the connection (WinRM not listening?)")
        if "reset" in text.lower() or "aborted" in text.lower() or "RemoteDisconnected" in text:
            return CollectionError("reset", f"{where} closed the connection unexpectedly")
        if "Name or service not known" in text or "getaddrinfo" in text:
            return CollectionError("refused", f"cannot resolve {target.address}")
        return CollectionError("refused", f"cannot connect to {where}")
    if isinstance(exc, WinRMTransportError):
        if exc.code == 413:
            # WinRM refuses a request larger than its MaxEnvelopeSizekb with HTTP 413, no body
            # (Windows' own client: ERROR_WSMAN_HTTP_REQUEST_TOO_LARGE_STATUS, "the request size
            # exceeded the configured MaxEnvelopeSize quota"); docs/lab.md, [ENVELOPE-413].
            return CollectionError("protocol", f"{where} refused a request as larger than its MaxEnvelopeSize "
                                   "quota (HTTP 413)",
                                   hint="the server's MaxEnvelopeSizekb is smaller than this request")
        return CollectionError("protocol", f"{where} answered HTTP {exc.code}")
    if isinstance(exc, WinRMError):
        return CollectionError("protocol", f"WinRM error talking to {where}: {str(exc)[:200]}")
    if isinstance(exc, ElementTree.ParseError):  # pywinrm parses each answer with ElementTree
        return CollectionError("protocol", f"{where} answered something that is not WS-Management XML")
    if isinstance(exc, requests.exceptions.RequestException):
        return CollectionError("protocol", f"HTTP error talking to {where}: {type(exc).__name__}")
    unreadable = httpwire.unreadable_auth_token(exc, where)  # e.g. a malformed NTLM challenge
    if unreadable is not None:
        return unreadable
    log.error("unexpected %s while talking to %s", type(exc).__name__, where, exc_info=exc)
    return CollectionError("internal", f"unexpected {type(exc).__name__} while talking to {where}")


def _receive_all(protocol: Protocol, shell_id: str, command_id: str, deadline: float, target: Target,
                 max_output: int) -> tuple[bytes, bytes, int]:
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    size = 0
    while True:
        _set_read_timeout(protocol, deadline)
        try:
            out, err, exit_code, done = protocol.get_command_output_raw(shell_id, command_id)
        except WinRMOperationTimeoutError:
            continue  # the command is still running; the deadline decides
        size += len(out) + len(err)
        if size > max_output:
            raise CollectorOutputError(
                f"{target.name} sent more than {httpwire.size_text(max_output)} of output; refused")
        stdout.append(out)
        stderr.append(err)
        if done:
            return b"".join(stdout), b"".join(stderr), exit_code


def _environment_refused(exc: WSManFaultError) -> bool:
    """Whether a fault on a Create that carried environment variables is about them: WinRM
    answers fault 87, w:InvalidParameter, "The parameter is incorrect." for a value with a
    `%` (rundeck-plugins/py-winrm-plugin#74; docs/launch.md), and for one that is too long."""
    return exc.wsman_fault_code == 87 or str(exc.fault_subcode or "").endswith(":InvalidParameter")


def _run_env(protocol: Protocol, shell_id: str, script: str, deadline: float, target: Target,
             max_output: int) -> tuple[bytes, bytes, int]:
    """The common launch in a shell created with the script in its environment."""
    _set_read_timeout(protocol, deadline)
    command_id = protocol.run_command(shell_id, collector.launch_command("env", script=script))
    return _receive_all(protocol, shell_id, command_id, deadline, target, max_output)


def _run_stdin(protocol: Protocol, shell_id: str, script: str, env: dict[str, str], deadline: float,
               target: Target, max_output: int) -> tuple[bytes, bytes, int]:
    """The fallback launch in an open shell: the script on PowerShell's stdin, a pipe
    (WINRS_CONSOLEMODE_STDIN=FALSE: [MS-WSMV] 3.1.4.11, TRUE means a console; Ansible's
    WinRM connection sends FALSE whenever it pipes input)."""
    _set_read_timeout(protocol, deadline)
    command_id = protocol.run_command(shell_id, collector.launch_command("stdin", env, script),
                                      console_mode_stdin=False)
    data = script.encode("ascii")  # the shipped scripts are ASCII (tests/test_collector_script.py)
    offset = 0
    while True:
        _set_read_timeout(protocol, deadline)
        piece = data[offset:offset + SEND_CHUNK_BYTES]
        offset += len(piece)
        protocol.send_command_input(shell_id, command_id, piece, end=offset >= len(data))
        if offset >= len(data):
            break
    return _receive_all(protocol, shell_id, command_id, deadline, target, max_output)


class _Shells:
    """The shell a collection holds open (at most one at a time), for `_close`."""

    def __init__(self, protocol: Protocol, target: Target, deadline: float) -> None:
        self.protocol, self.target, self.deadline = protocol, target, deadline
        self.shell_id: str | None = None

    def open(self, env: dict[str, str] | None) -> str:
        _set_read_timeout(self.protocol, self.deadline)
        self.shell_id = self.protocol.open_shell(env_vars=env, codepage=collector.SHELL_CODEPAGE, noprofile=True)
        return self.shell_id

    def open_with_script(self, script: str, env: dict[str, str]) -> str | None:
        """A shell whose environment carries the script; None if the server refused that
        environment (a Create fault about it, `_environment_refused`)."""
        try:
            return self.open({collector.SCRIPT_ENV_VAR: script, **env})
        except WSManFaultError as exc:
            if not _environment_refused(exc):
                raise
            log.info("%s refused the shell's environment (%s): the script goes through stdin",
                     self.target.name, _translate(self.target, exc).message)
            return None

    def delete(self) -> None:
        """Delete the open shell before another is created (quota: docs/launch.md)."""
        if self.shell_id is not None:
            _set_read_timeout(self.protocol, self.deadline)
            self.protocol.close_shell(self.shell_id, close_session=False)
            self.shell_id = None


def run_collector(
    target: Target,
    password: str | None,
    *,
    script: str,
    env: dict[str, str],
    timeout_s: float,
    max_output: int = MAX_OUTPUT_BYTES,
    method: LaunchMethod = "env",
) -> CommandOutput:
    """Run a script from `scanner.collect` on `target`; raise CollectionError on any failure.

    `method` is how to deliver the script first: "env" (falling back to "stdin" when the
    server refuses the shell's environment, or the bootstrap finds the script missing or
    changed), or "stdin" (falling back to "env" when the stdin bootstrap finds no intact
    script); the result says which one ran (docs/launch.md). Without a port in the inventory, WinRM 2.0's port is tried first,
    then 1.1's (on_each_port).
    """
    if method not in collector.LAUNCH_METHODS:
        raise ValueError(f"unknown launch method {method!r}")
    deadline = time.monotonic() + timeout_s
    return on_each_port(target, lambda attempt: _run_once(
        attempt, password, script=script, env=env, timeout_s=max(0.5, deadline - time.monotonic()),
        max_output=max_output, method=method))


def _run_once(
    target: Target,
    password: str | None,
    *,
    script: str,
    env: dict[str, str],
    timeout_s: float,
    max_output: int,
    method: LaunchMethod,
) -> CommandOutput:
    deadline = time.monotonic() + timeout_s
    protocol = _protocol(target, password, timeout_s)
    guard = httpguard.Guard(timeout_s, max_body=max(MAX_RESPONSE_BYTES, max_output * 2), what=target.endpoint)
    _guard(protocol, guard)
    shells = _Shells(protocol, target, deadline)
    try:
        if method == "env":
            shell_id = shells.open_with_script(script, env)
            if shell_id is not None:
                out, err, code = _run_env(protocol, shell_id, script, deadline, target, max_output)
                if not retry.undelivered(out, code):
                    return CommandOutput(out, err, code, "env")
            else:  # the environment was refused: a shell without it
                shell_id = shells.open(None)
            out, err, code = _run_stdin(protocol, shell_id, script, env, deadline, target, max_output)
            if retry.undelivered(out, code):
                raise retry.not_delivered(target)
            return CommandOutput(out, err, code, "stdin")
        # "stdin" remembered: if it no longer delivers the script, the env launch in a new
        # shell (the caller then remembers "env")
        shell_id = shells.open(None)
        out, err, code = _run_stdin(protocol, shell_id, script, env, deadline, target, max_output)
        if not retry.undelivered(out, code):
            return CommandOutput(out, err, code, "stdin")
        log.info("%s: the remembered stdin launch did not deliver the script; trying the environment",
                 target.name)
        shells.delete()
        shell_id = shells.open_with_script(script, env)
        if shell_id is None:
            raise retry.not_delivered(target)
        out, err, code = _run_env(protocol, shell_id, script, deadline, target, max_output)
        if retry.undelivered(out, code):
            raise retry.not_delivered(target)
        return CommandOutput(out, err, code, "env")
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _translate(target, exc) from None
    finally:
        _close(target, password, protocol, guard, shells.shell_id, deadline)


#: A shell still open when the collection ends (its deadline passed, an exchange failed) is
#: deleted on an exchange of its own, bounded by this: on WinRM 1.1 a shell not deleted
#: counts against MaxShellsPerUser (5) until its idle timeout (docs/lab.md, [QUOTA-FAULT]).
DELETE_TIMEOUT_S = 5.0


def _close(target: Target, password: str | None, protocol: Protocol, guard: httpguard.Guard,
           shell_id: str | None, deadline: float) -> None:
    """Delete the shell if one is open (`_delete_shell`), close the connection and the
    guard; never raises."""
    try:
        if shell_id is not None:
            _delete_shell(target, password, protocol, guard, shell_id, deadline)
    finally:
        try:
            protocol.transport.close_session()
        except Exception:
            pass
        guard.close()


def _delete_shell(target: Target, password: str | None, protocol: Protocol, guard: httpguard.Guard,
                  shell_id: str, deadline: float) -> None:
    """Delete the shell on the collection's own connection while its deadline allows, else
    (past the deadline, or that exchange broke) on a fresh connection bounded by
    DELETE_TIMEOUT_S. A Delete that fails is logged with the server, the shell id and the
    reason; never raises. After an interrupt no new exchange starts (the shell is logged)."""
    where = f"{target.name} ({target.endpoint})"
    remaining = deadline - time.monotonic()
    if guard.ended is None and remaining > 0:
        try:
            protocol.transport.read_timeout_sec = min(DELETE_TIMEOUT_S, remaining)  # type: ignore[assignment]
            protocol.close_shell(shell_id, close_session=False)
            return
        except Exception as exc:
            if isinstance(exc, WSManFaultError):  # the server answered: a second try would get the same
                log.warning("could not delete shell %s on %s: %s", shell_id, where, _translate(target, exc).message)
                return
    if guard.ended == "interrupted":
        log.warning("shell %s on %s left open: the scan was interrupted (the server ends it after its idle "
                    "timeout)", shell_id, where)
        return
    fresh_guard = httpguard.Guard(DELETE_TIMEOUT_S, max_body=1024 * 1024, what=target.endpoint)
    fresh: Protocol | None = None
    try:
        fresh = _protocol(target, password, DELETE_TIMEOUT_S)
        _guard(fresh, fresh_guard)
        fresh.transport.read_timeout_sec = DELETE_TIMEOUT_S  # type: ignore[assignment]
        fresh.close_shell(shell_id, close_session=False)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        log.warning("could not delete shell %s on %s: %s", shell_id, where, _translate(target, exc).message)
    finally:
        if fresh is not None:
            try:
                fresh.transport.close_session()
            except Exception:
                pass
        fresh_guard.close()


def collect_host(target: Target, password: str | None, *, since: datetime, timeout_s: float,
                 max_output: int = MAX_OUTPUT_BYTES, method: LaunchMethod = "env",
                 on_method: Callable[[LaunchMethod], None] | None = None) -> bytes:
    """Run the collector on one CAS and return its stdout (exit code checked).

    `method` is the launch to try first (what worked last time, from the history);
    `on_method` hears the launch that delivered the script, before the exit code is checked.
    """
    script = collector.collector_script()
    result = run_collector(target, password, script=script,
                           env=collector.shell_environment(script, since), timeout_s=timeout_s,
                           max_output=max_output, method=method)
    if on_method is not None:
        on_method(result.method)
    if result.exit_code != 0:
        raise CollectionError("script-error",
                              f"the collector failed on {target.name} (exit code {result.exit_code}): "
                              f"{stderr_summary(result.stderr) or 'no error text'}")
    return result.stdout


def discover(target: Target, password: str | None, *, timeout_s: float) -> bytes:
    """Run the discovery script (Get-ExchangeServer) on one management host; return stdout."""
    script = collector.discover_script()
    result = run_collector(target, password, script=script, env={}, timeout_s=timeout_s)
    if result.exit_code != 0:
        raise CollectionError("script-error",
                              f"discovery failed on {target.name} (exit code {result.exit_code}): "
                              f"{stderr_summary(result.stderr) or 'no error text'}")
    return result.stdout


#: A WS-Management Identify request ([DMTF DSP0226] 11): no addressing headers, one
#: wsmid:Identify in the body. Sent with the HTTP header `WSMANIDENTIFY: unauthenticated`
#: WinRM answers it without logon (docs/lab.md, "Identify").
IDENTIFY_REQUEST = (
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:wsmid="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd">'
    "<s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>"
)


@dataclass(frozen=True)
class AccountProbe:
    """What the account may do on one server, short of running a command."""

    identify: bytes  # the IdentifyResponse to an authenticated Identify (the real OS version)
    shell_error: CollectionError | None  # None: a shell was created and deleted


def probe_account(target: Target, password: str | None, *, timeout_s: float) -> AccountProbe:
    """Log on with an authenticated Identify, then Create and Delete a shell, on one
    connection (the port as given: no fallback). CollectionError when the logon fails."""
    deadline = time.monotonic() + timeout_s
    protocol = _protocol(target, password, timeout_s)
    guard = httpguard.Guard(timeout_s, max_body=1024 * 1024, what=target.endpoint)
    _guard(protocol, guard)
    shell_id: str | None = None
    try:
        try:
            _set_read_timeout(protocol, deadline)
            identify = protocol.send_message(IDENTIFY_REQUEST)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise _translate(target, exc) from None
        shell_error: CollectionError | None = None
        try:
            _set_read_timeout(protocol, deadline)
            shell_id = protocol.open_shell(codepage=collector.SHELL_CODEPAGE, noprofile=True)
            _set_read_timeout(protocol, deadline)
            protocol.close_shell(shell_id)
            shell_id = None
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            shell_error = _translate(target, exc)
        return AccountProbe(identify, shell_error)
    finally:
        _close(target, password, protocol, guard, shell_id, deadline)
