"""How long reading one event 1008 message takes, for hostile 16 KB messages.

    .venv/bin/python bench/bench_events.py [--repeats 20]

Each message is MAX_MESSAGE (16,384) characters built to make a matcher work hard:
repeated opening words, repeated middle words, long white space runs, text with no
closing words. Prints, per message, the median and the worst time of `read_refused_logon`
(scanner.parse.events) over the repeats, and for comparison the regular expression the
parser used before (issue 15 item 6: English only, case-sensitive, `.*` groups).
Target: at most 5 ms per 16 KB message.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from scanner.collect.collected import RefusedLogon
from scanner.parse.events import MAX_MESSAGE, read_refused_logon

_OLD_TEMPLATE = (
    'User "{user}" was prevented connecting to his/her mailbox because the Mailbox Server resides '
    "in a different Active Directory site ({site}) than the Client Access Server ({cas}) to which "
    "he/she connected."
)


def _old_pattern() -> re.Pattern[str]:
    """The parser's pattern before the change, rebuilt the way it was built."""
    parts = re.split(r"\{(\w+)\}", _OLD_TEMPLATE.split(" Either arrange", 1)[0])
    regex = []
    for index, part in enumerate(parts):
        if index % 2:
            regex.append(f"(?P<{part}>.*?)" if part != "user" else f"(?P<{part}>.*)")
        else:
            regex.append(r"\s+".join(re.escape(word) for word in part.split(" ")))
    return re.compile("".join(regex), re.DOTALL)


def _fill(piece: str) -> str:
    return (piece * (MAX_MESSAGE // len(piece) + 1))[:MAX_MESSAGE]


EN_USER = 'User "'
EN_SITE = '" was prevented connecting to his/her mailbox because the Mailbox Server resides in a different Active Directory site ('
EN_CAS = ") than the Client Access Server ("
DE_USER = 'Es wurde verhindert, dass der Benutzer "'
DE_SITE = '" eine Verbindung mit seinem Postfach herstellt, weil sich der Postfachserver an einem anderen Active Directory-Standort ('
HOSTILE: dict[str, str] = {
    "opening words repeated (en)": _fill(EN_USER),
    "opening + middle words repeated (en)": _fill(EN_USER + "x" + EN_SITE),
    "opening, then middle words repeated (en)": EN_USER + _fill(EN_SITE + "s" + EN_CAS)[: MAX_MESSAGE - 6],
    "opening words repeated (de)": _fill(DE_USER),
    "opening + middle words repeated (de)": _fill(DE_USER + "x" + DE_SITE),
    "white space runs between words": _fill("User \t\r\n        " + " " * 200 + '"x"   was   '),
    "16 KB of one letter": "a" * MAX_MESSAGE,
    "16 KB of quotes and parentheses": _fill('"()'),
}


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median wall time, worst wall time and worst CPU time of this thread, in ms. On a
    shared machine the worst wall time includes waiting for a core; the CPU time does not."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return statistics.median(wall) * 1000, max(wall) * 1000, max(cpu) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--old-repeats", type=int, default=3, help="repeats of the old pattern (slow)")
    args = parser.parse_args()
    old = _old_pattern()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    print(f"{'message (16,384 characters)':44} {'median':>9} {'worst':>9} {'worst CPU':>10} {'old median':>11}")
    worst = 0.0
    for name, text in HOSTILE.items():
        assert len(text) <= MAX_MESSAGE, name
        event = RefusedLogon("MSExchangePOP3", now, ("a", "b", "c"), text)
        median, top, top_cpu = _time(lambda e=event: read_refused_logon(e, "CAS01"), args.repeats)  # type: ignore[misc]
        old_median, _, _ = _time(lambda t=text: old.search(t), args.old_repeats)  # type: ignore[misc]
        worst = max(worst, top_cpu)
        print(f"{name:44} {median:6.3f} ms {top:6.3f} ms {top_cpu:7.3f} ms {old_median:8.1f} ms")
    print(f"worst CPU time of one read: {worst:.3f} ms (target: at most 5 ms)")


if __name__ == "__main__":
    main()
