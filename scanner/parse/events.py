"""Event 1008 (MSExchangePOP3 / MSExchangeIMAP4): who was refused, from which AD site, on
which CAS, read from the event's message text.

`EventLogEntry.Message` is rendered from the server's own message file, so in the
server's language. The wording is Microsoft's documented description of event 1008
(Exchange 2007 documentation, TechNet cc671173, "Event ID 1008", the en-us page and the
de-de page; docs/exchange-facts.md quotes both). Both are read, each case-insensitively
and with any run of white space between words (rendered text may wrap). The numbering of
the event's insertion strings is not documented, so the values are taken from the text by
its fixed wording, never by an assumed position; the insertion strings are the second
source, used only when neither wording is found (for example when the message file is
missing on the server and Windows prints "The description for Event ID ... cannot be
found").

The text is untrusted: it is read with a fixed number of substring searches over at most
MAX_MESSAGE characters (no regular expression that can backtrack), so a hostile message
costs linear time (bench/bench_events.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from scanner.collect.collected import RefusedLogon

#: At most this many characters of a message are read.
MAX_MESSAGE = 16384
_MAX_VALUE = 512


@dataclass(frozen=True)
class Wording:
    """The fixed words of one language's first sentence of event 1008, in lower case with
    single spaces: before the user, between user and site, between site and CAS, after
    the CAS."""

    language: str
    before_user: str
    user_to_site: str
    site_to_cas: str
    after_cas: str


#: en-us: User "<User Name>" was prevented connecting to his/her mailbox because the
#: Mailbox Server resides in a different Active Directory site (<site name>) than the
#: Client Access Server (<CAS name>) to which he/she connected. Either arrange ...
ENGLISH = Wording(
    "en",
    'user "',
    '" was prevented connecting to his/her mailbox because the mailbox server resides in a '
    "different active directory site (",
    ") than the client access server (",
    ") to which he/she connected",
)
#: de-de: Es wurde verhindert, dass der Benutzer "<Benutzername>" eine Verbindung mit
#: seinem Postfach herstellt, weil sich der Postfachserver an einem anderen Active
#: Directory-Standort (<Standort>) als der Clientzugriffsserver (<Clientzugriffsserver>),
#: mit dem eine Verbindung hergestellt wurde, befindet. Platzieren Sie ...
GERMAN = Wording(
    "de",
    'es wurde verhindert, dass der benutzer "',
    '" eine verbindung mit seinem postfach herstellt, weil sich der postfachserver an einem '
    "anderen active directory-standort (",
    ") als der clientzugriffsserver (",
    "), mit dem eine verbindung hergestellt wurde, befindet",
)
WORDINGS: tuple[Wording, ...] = (ENGLISH, GERMAN)

# Lower case for ASCII letters only: the fixed words are ASCII, and unlike str.lower()
# this keeps every index of the text (str.lower() can change a string's length).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class RefusedLogonReading:
    """What one event 1008 says."""

    user: str  # "" when neither source names it
    mailbox_site: str  # the AD site of the user's mailbox server
    cas: str  # the Client Access Server the user connected to
    source: str  # "message" (a documented text) | "insertions" (identified by value) | "none"
    language: str = ""  # "en" | "de": the wording found in the message; "" when none


def _clean(value: str) -> str:
    return value.strip()[:_MAX_VALUE]


def _read(text: str, folded: str, wording: Wording) -> tuple[str, str, str] | None:
    """(user, site, CAS) of `text` in `wording`, or None. `folded` is `text` with ASCII
    lower case, index for index. The user runs from the first opening words to the last
    words that follow it (a user name may hold a quote); site and CAS each end at the
    first closing words after them (a site name may hold parentheses)."""
    start = folded.find(wording.before_user)
    if start < 0:
        return None
    user_at = start + len(wording.before_user)
    user_end = folded.rfind(wording.user_to_site, user_at)
    if user_end < 0:
        return None
    site_at = user_end + len(wording.user_to_site)
    site_end = folded.find(wording.site_to_cas, site_at)
    if site_end < 0:
        return None
    cas_at = site_end + len(wording.site_to_cas)
    cas_end = folded.find(wording.after_cas, cas_at)
    if cas_end < 0:
        return None
    return text[user_at:user_end], text[site_at:site_end], text[cas_at:cas_end]


def read_message(message: str) -> tuple[str, str, str, str] | None:
    """(language, user, site, CAS) from a rendered message of event 1008 in any documented
    language; None when no documented wording is in it."""
    text = " ".join(message[:MAX_MESSAGE].split())  # any white space run: one space
    folded = text.translate(_ASCII_LOWER)
    for wording in WORDINGS:
        found = _read(text, folded, wording)
        if found is not None:
            return (wording.language, *found)
    return None


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
    """User, mailbox site and CAS of one event 1008: from its message text in English or
    German, else from its insertion strings (`computer` is the CAS's own name, to
    recognise it among them)."""
    found = read_message(event.message)
    if found is not None:
        language, user, site, cas = found
        return RefusedLogonReading(_clean(user), _clean(site), _clean(cas), "message", language)
    return _from_insertions(event.insertions, computer)
