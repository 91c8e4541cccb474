"""The controls a rule serves (rules/catalog.toml) as report text, in the report's language.

The framework, id and title are the framework's own (not translated); the match word is.
"""

from __future__ import annotations

from collections.abc import Iterable

from scanner.judge.results import Control
from scanner.report.labels import Labels


def controls_text(labels: Labels, controls: Iterable[Control], *, titles: bool = False) -> str | None:
    """"NIST SP 800-53 CM-6 (exact); ..." for a finding; one control a line with its title and
    source for the rule catalog (`titles`); None without controls."""
    parts = []
    for c in controls:
        match = labels.word("match", c.match)
        only = f" [{c.protocol}]" if c.protocol else ""
        parts.append(f"{c.framework} {c.id} {c.title} ({match}){only}: {c.source}" if titles
                     else f"{c.framework} {c.id} ({match}){only}")
    return ("\n" if titles else "; ").join(parts) or None
