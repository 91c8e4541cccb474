"""Our own reason sentences in the report's language.

The parser and the reader explain an unknown, malformed or unreadable value in English
sentences (scanner/parse/configfile.py, configscan.py); the history and the JSON report keep
them as written (stable, English). The workbook and the CSV render them again here: each
sentence we write has a pattern, its parts are carried over verbatim (file names, server- or
.NET-supplied error text), and only our words are translated. A sentence without a pattern
(server text, an older run's wording) is shown as it is.
"""

from __future__ import annotations

import re

# (pattern, German template). Groups named r_* are themselves reasons and are rendered again;
# every other group is copied verbatim. Tried in order; the first full match wins.
_DE: tuple[tuple[str, str], ...] = (
    (r"The value is unknown: (?P<r_why>.+)\.", "Der Wert ist unbekannt: {r_why}."),
    (r"\.NET refuses this file: (?P<r_why>.+)\.", ".NET weist diese Datei ab: {r_why}."),
    (r"The config file does not exist\.", "Die Konfigurationsdatei existiert nicht."),
    (r"The config file is too large to be a real one \(collector refused it\)\.",
     "Die Konfigurationsdatei ist zu groß für eine echte (vom Sammler abgewiesen)."),
    (r"The collector could not read the file: (?P<error>.+)\.",
     "Der Sammler konnte die Datei nicht lesen: {error}."),
    (r"The collector returned no content for the file\.", "Der Sammler lieferte keinen Inhalt für die Datei."),
    (r"The collected content is not bytes\.", "Der gesammelte Inhalt sind keine Bytes."),
    (r"The config file is too large \((?P<size>\d+) bytes, limit (?P<limit>\d+)\)\.",
     "Die Konfigurationsdatei ist zu groß ({size} Bytes, Grenze {limit})."),
    (r"The file is not usable XML: (?P<error>.+)\.", "Die Datei ist kein verwendbares XML: {error}."),
    (r"(?P<key>\S+): the value, (?P<raw>.+), is not a boolean; how Exchange treats it is unconfirmed\.",
     "{key}: der Wert {raw} ist kein Wahrheitswert; wie Exchange ihn behandelt, ist unbestätigt."),
    (r"(?P<key>\S+): the joined value of (?P<n>\d+) keys that \.NET treats as one name, (?P<raw>.+), "
     r"is not a boolean; how Exchange treats it is unconfirmed\.",
     "{key}: der zusammengefügte Wert von {n} Schlüsseln, die .NET als einen Namen behandelt, {raw}, "
     "ist kein Wahrheitswert; wie Exchange ihn behandelt, ist unbestätigt."),
    # scanner/parse/configfile.py: references (file=, configSource=)
    (r"appSettings comes from a file that was not read: (?P<r_why>.+)",
     "appSettings stammt aus einer Datei, die nicht gelesen wurde: {r_why}"),
    (r"entries of the file= file override the config file, and that file was not read: (?P<r_why>.+)",
     "Einträge der file=-Datei überschreiben die Konfigurationsdatei, und diese Datei wurde nicht gelesen: {r_why}"),
    (r"(?P<target>\w+='.*') names a file the collector could not look for \((?P<error>.+)\)",
     "{target} nennt eine Datei, nach der der Sammler nicht suchen konnte ({error})"),
    (r"(?P<target>\w+='.*') names a file this collector did not fetch",
     "{target} nennt eine Datei, die dieser Sammler nicht abgerufen hat"),
    (r"(?P<target>\w+='.*') names a file the collector did not fetch",
     "{target} nennt eine Datei, die der Sammler nicht abgerufen hat"),
    (r"(?P<target>\w+='.*') names a file outside the PopImap folder "
     r"\(the collector reads referenced files only from the PopImap folder itself\)",
     "{target} nennt eine Datei außerhalb des PopImap-Ordners "
     "(der Sammler liest referenzierte Dateien nur aus dem PopImap-Ordner selbst)"),
    (r"the (?P<target>\w+='.*') file is too large for the collector \((?P<size>\d+) bytes, limit (?P<limit>\d+) bytes\)",
     "die Datei {target} ist zu groß für den Sammler ({size} Bytes, Grenze {limit} Bytes)"),
    (r"the (?P<target>\w+='.*') file is too large for the collector \(its size, limit (?P<limit>\d+) bytes\)",
     "die Datei {target} ist zu groß für den Sammler (Grenze {limit} Bytes)"),
    (r"the collector could not read the (?P<target>\w+='.*') file: (?P<error>.+)",
     "der Sammler konnte die Datei {target} nicht lesen: {error}"),
    (r"the collector returned no content for the (?P<target>\w+='.*') file",
     "der Sammler lieferte keinen Inhalt für die Datei {target}"),
    (r"configSource (?P<name>'.*') climbs out of a folder whose name is not known, "
     r"so whether \.NET accepts it cannot be told",
     "configSource {name} verlässt einen Ordner, dessen Name nicht bekannt ist; "
     "ob .NET das annimmt, lässt sich nicht sagen"),
    (r"the configSource file (?P<name>'.*') does not exist \(Unable to open configSource file\)",
     "die configSource-Datei {name} existiert nicht (Unable to open configSource file)"),
    (r"the configSource file (?P<name>'.*') refers on to another file \(file=, configSource= or encryption\), "
     r"which the collector does not follow",
     "die configSource-Datei {name} verweist weiter auf eine andere Datei (file=, configSource= oder "
     "Verschlüsselung), der der Sammler nicht folgt"),
    (r"appSettings is encrypted with the (?P<name>'.*') provider",
     "appSettings ist mit dem Anbieter {name} verschlüsselt"),
    (r"the (?P<attr>\w+)= file (?P<name>'.*') is not usable XML: (?P<error>.+)",
     "die {attr}=-Datei {name} ist kein verwendbares XML: {error}"),
    (r"configSource (?P<name>'.*') is empty or has surrounding white space \(Config_source_invalid_format\)",
     "configSource {name} ist leer oder von Leerraum umgeben (Config_source_invalid_format)"),
    (r"configSource (?P<name>'.*') contains '/' \(Config_source_invalid_chars\)",
     "configSource {name} enthält '/' (Config_source_invalid_chars)"),
    (r"configSource (?P<name>'.*') is not a relative file name \(Config_source_invalid_format\)",
     "configSource {name} ist kein relativer Dateiname (Config_source_invalid_format)"),
    (r"configSource (?P<name>'.*') is not in the config file's folder \(Config_source_not_under_config_dir\)",
     "configSource {name} liegt nicht im Ordner der Konfigurationsdatei (Config_source_not_under_config_dir)"),
    # scanner/parse/configscan.py: what .NET refuses in the file's structure
    (r"<configSections> must be the first element of <configuration>, once",
     "<configSections> muss das erste Element von <configuration> sein, einmal"),
    (r"<location> is nested", "<location> ist verschachtelt"),
    (r"unrecognized configuration section (?P<name>'.*')", "unbekannter Konfigurationsabschnitt {name}"),
    (r"section (?P<name><.*>) appears more than once \(sections must be unique\)",
     "Abschnitt {name} kommt mehrfach vor (Abschnitte müssen eindeutig sein)"),
    (r"section (?P<name>'.*') is declared without a type", "Abschnitt {name} ist ohne Typ deklariert"),
    (r"section (?P<name>'.*') is already declared", "Abschnitt {name} ist bereits deklariert"),
)

_TABLES: dict[str, tuple[tuple[re.Pattern[str], str], ...]] = {
    "de": tuple((re.compile(p, re.DOTALL), t) for p, t in _DE),
}


def reason_text(text: str | None, lang: str) -> str | None:
    """`text` (one of our reason sentences) in `lang`; unknown sentences unchanged."""
    if not text or lang not in _TABLES:
        return text
    return _render(text, _TABLES[lang], depth=0)


def _render(text: str, table: tuple[tuple[re.Pattern[str], str], ...], depth: int) -> str:
    if depth > 4:
        return text
    for pattern, template in table:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        parts = {k: _render(v, table, depth + 1) if k.startswith("r_") else v for k, v in match.groupdict().items()}
        return template.format(**parts)
    return text
