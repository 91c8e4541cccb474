"""Where and how a collection is attempted again: the other WinRM port when the first
refuses the connection, the other launch method when the script did not arrive intact
(docs/launch.md). Used by winrm_client.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from scanner import collect as collector
from scanner.errors import CollectionError
from scanner.inventory import Target

T = TypeVar("T")


class ConnectionRefused(CollectionError):
    """Nothing listens on the port: another candidate port of the server may answer."""

    def __init__(self, message: str) -> None:
        super().__init__("refused", message)


def on_each_port(target: Target, attempt: Callable[[Target], T]) -> T:
    """Run `attempt` against the target's port, or, when the inventory names none, against
    WinRM 2.0's port and, only if that connection is refused, WinRM 1.1's (inventory.py,
    DEFAULT_PORTS): at most one refused connection more than a known port costs."""
    ports = target.candidate_ports
    for index, port in enumerate(ports):
        try:
            return attempt(replace(target, port=port, port_given=True))
        except ConnectionRefused:
            if index + 1 < len(ports):
                continue
            if len(ports) == 1:
                raise
            tried = " and ".join(str(p) for p in ports)
            raise ConnectionRefused(f"{target.address} refused connections on ports {tried} "
                                    "(WinRM not listening?)") from None
    raise AssertionError("no candidate port")  # candidate_ports is never empty


def undelivered(stdout: bytes, exit_code: int) -> bool:
    """Whether a bootstrap reported that the script did not arrive (an empty
    $env:CASAUDIT_PS) or arrived changed (its length or SHA-1 differ: cut short on the way,
    or nothing read from stdin): then the other launch method is tried."""
    markers = (collector.NOENV_MARKER.encode("ascii"), collector.BADSCRIPT_MARKER.encode("ascii"))
    return exit_code == collector.NOENV_EXIT_CODE and stdout.strip() in markers


def not_delivered(target: Target) -> CollectionError:
    return CollectionError("script-error", f"the script did not reach PowerShell intact on {target.name}, "
                           "neither in the shell's environment nor on stdin (docs/launch.md)")
