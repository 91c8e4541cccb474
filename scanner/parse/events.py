"""Event 1008 (MSExchangePOP3 / MSExchangeIMAP4): who was refused, from which AD site, on
which CAS, read from the event's message text.

The text is Microsoft's documented description of event 1008 (Exchange 2007 documentation,
TechNet cc671173, "Event ID 1008"; quoted in MESSAGE_1008 below). The numbering of the event's insertion strings is not documented,
so the values are taken from the text by its fixed wording, never by an assumed position;
the insertion strings are the second source, used when the text does not have the
documented wording (for example when the message file is missing on the server and
Windows prints "The description for Event ID ... cannot be found").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scanner.collect.collected import RefusedLogon

#: The documented message of event 1008, with its three placeholders.
MESSAGE_1008 = (
    'User "{user}" was prevented connecting to his/her mailbox because the Mailbox Server resides '
    "in a different Active Directory site ({site}) than the Client Access Server ({cas}) to which "
    "he/she connected. Either arrange for the Client Access server and the Mailbox server to reside "
    "in the same site, or change the configuration setting of AllowCrossSiteSessions to true."
)


def event_message(user: str, site: str, cas: str) -> str:
    """The message of event 1008 for these values, word for word as documented."""
    return MESSAGE_1008.format(user=user, site=site, cas=cas)


def _pattern(template: str) -> re.Pattern[str]:
    """The template's first sentence as a regular expression: fixed words literally (any run
    of white space between them, as rendered text may wrap), placeholders as groups."""
    first = template.split(" Either arrange", 1)[0]
    parts = re.split(r"\{(\w+)\}", first)
    regex = []
    for index, part in enumerate(parts):
        if index % 2:
            regex.append(f"(?P<{part}>.*?)" if part != "user" else f"(?P<{part}>.*)")
        else:
            regex.append(r"\s+".join(re.escape(word) for word in part.split(" ")))
    return re.compile("".join(regex), re.DOTALL)


_MESSAGE = _pattern(MESSAGE_1008)
_MAX_VALUE = 512


@dataclass(frozen=True)
class RefusedLogonReading:
    """What one event 1008 says."""

    user: str  # "" when neither source names it
    mailbox_site: str  # the AD site of the user's mailbox server
    cas: str  # the Client Access Server the user connected to
    source: str  # "message" (the documented text) | "insertions" (identified by value) | "none"


def _clean(value: str) -> str:
    return value.strip()[:_MAX_VALUE]


def _from_insertions(insertions: tuple[str, ...], computer: str) -> RefusedLogonReading:
    """Tell the three insertion strings apart by what they are, not by where they stand: the
    CAS is this server's computer name, the user an account (DOMAIN\\user or user@domain),
    the site what remains."""
    values = [_clean(v) for v in insertions if v and v.strip()]
    host = computer.casefold()
    cas_at = [i for i, v in enumerate(values) if host and v.split(".", 1)[0].casefold() == host]
    cas = values[cas_at[0]] if len(cas_at) == 1 else ""
    rest = [v for i, v in enumerate(values) if not (cas and i == cas_at[0])]
    account_at = [i for i, v in enumerate(rest) if "\\" in v or "@" in v]
    user = rest[account_at[0]] if len(account_at) == 1 else ""
    others = [v for i, v in enumerate(rest) if not (user and i == account_at[0])]
    site = others[0] if len(others) == 1 and user and cas else ""
    found = bool(user or site or cas)
    return RefusedLogonReading(user, site, cas, "insertions" if found else "none")


def read_refused_logon(event: RefusedLogon, computer: str = "") -> RefusedLogonReading:
    """User, mailbox site and CAS of one event 1008: from its message text, else from its
    insertion strings (`computer` is the CAS's own name, to recognise it among them)."""
    match = _MESSAGE.search(event.message[:16384])
    if match:
        return RefusedLogonReading(_clean(match["user"]), _clean(match["site"]), _clean(match["cas"]), "message")
    return _from_insertions(event.insertions, computer)
