"""The Application log of a simulated CAS, as collect.ps1's 'events' stage reads it.

Event 1008 is rendered the way Windows renders `EventLogEntry.Message`: from the message
file of the server's language (`language`, en | de), word for word as Microsoft documents
it. The texts are written out here from the documentation, not derived from the
scanner's parser, so the tests check the parser against Windows' wording (docs/lab.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from scanner.facts import PROTOCOLS
from scanner.lab.fleet_model import RefusedLogonFact, SimServer

#: Microsoft, "Event ID 1008" (Exchange Server 2007, TechNet cc671173), the en-us page.
MESSAGE_1008_EN = (
    'User "{user}" was prevented connecting to his/her mailbox because the Mailbox Server resides '
    "in a different Active Directory site ({site}) than the Client Access Server ({cas}) to which "
    "he/she connected. Either arrange for the Client Access server and the Mailbox server to reside "
    "in the same site, or change the configuration setting of AllowCrossSiteSessions to true."
)
#: The same page in German (de-de), as the German seed document quotes it.
MESSAGE_1008_DE = (
    'Es wurde verhindert, dass der Benutzer "{user}" eine Verbindung mit seinem Postfach '
    "herstellt, weil sich der Postfachserver an einem anderen Active Directory-Standort ({site}) "
    "als der Clientzugriffsserver ({cas}), mit dem eine Verbindung hergestellt wurde, befindet. "
    "Platzieren Sie den Clientzugriffsserver und den Postfachserver am gleichen Standort, oder "
    'ändern Sie die Konfigurationseinstellung von "AllowCrossSiteSessions" auf TRUE.'
)
MESSAGES_1008 = {"en": MESSAGE_1008_EN, "de": MESSAGE_1008_DE}
LANGUAGES = tuple(MESSAGES_1008)


def event_message(user: str, site: str, cas: str, language: str = "en") -> str:
    """EventLogEntry.Message of event 1008 on a server of `language`."""
    return MESSAGES_1008[language].format(user=user, site=site, cas=cas)


#: collect.ps1's $win: Get-EventLog -Newest reads at most this many entries.
WINDOW = 10000
EVENT_SOURCES = {"pop3": "MSExchangePOP3", "imap4": "MSExchangeIMAP4"}
#: What Get-EventLog says when the account may not open the log: .NET 2.0's
#: EventLog.OpenForRead throws InvalidOperationException (resource CantOpenLog) when
#: OpenEventLog fails, for the machine "." (docs/lab.md, [EVENTLOG-DENIED]; the wording
#: for Windows 2003's access check is unconfirmed).
DENIED_MESSAGE = "Cannot open log Application on machine .. Windows has not provided an error code."


def events_element(server: SimServer, since: datetime | None, max_events: int,
                   text: Callable[[str, object], str], escape: Callable[[object], str],
                   utc: Callable[[datetime | None], str]) -> tuple[str, tuple[str, ...]]:
    """collect.ps1's <events> element on `server`, and the messages its trap records.

    The simulated Application log holds the server's refused logons and nothing else, so
    the window is full only when there are at least WINDOW of them. `text`, `escape` and
    `utc` are the collector's T, X and U (scanner/lab/simhost.py)."""
    if server.application_log == "denied":
        head = ["<events", text("since", utc(since)), text("max", max_events), text("truncated", "false"),
                text("window", WINDOW), text("full", "false"), text("error", DENIED_MESSAGE), ">"]
        return "".join(head) + "</events>", (DENIED_MESSAGE,)
    entries: list[tuple[datetime, str, RefusedLogonFact]] = []
    for name in PROTOCOLS:
        for logon in server.protocols[name].refused_logons:
            entries.append((logon.at.replace(microsecond=0), name, logon))  # whole seconds
    entries.sort(key=lambda item: item[0], reverse=True)  # Get-EventLog -Newest: newest first
    window = entries[:WINDOW]
    found = [item for item in window if since is None or item[0] > since]
    full = len(window) >= WINDOW and (since is None or window[-1][0] > since)
    truncated = full or len(found) > max_events
    parts = ["<events", text("since", utc(since)), text("max", max_events),
             text("truncated", "true" if truncated else "false"), text("window", WINDOW),
             text("full", "true" if full else "false"), text("error", ""), ">"]
    cas = server.computer or server.name
    for at, protocol, logon in found[: max(max_events, 0)]:
        insertions = (logon.user, logon.mailbox_site, cas)
        parts.append("<event" + text("source", EVENT_SOURCES[protocol]) + text("id", "1008") + text("at", utc(at))
                     + ">")
        parts.extend(f"<insertion>{escape(s)}</insertion>" for s in insertions)
        parts.append(f"<message>{escape(event_message(*insertions, server.language))}</message></event>")
    parts.append("</events>")
    return "".join(parts), ()
