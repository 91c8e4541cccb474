"""Our reason sentences rendered in German; server-supplied parts stay verbatim."""

from scanner.report.reasons import reason_text


def test_a_reason_in_german_keeps_the_server_text_verbatim() -> None:
    english = "The collector could not read the file: Zugriff verweigert {0} (HRESULT 0x80070005)."
    assert reason_text(english, "de") == (
        "Der Sammler konnte die Datei nicht lesen: Zugriff verweigert {0} (HRESULT 0x80070005).")


def test_nested_reasons_are_rendered_at_every_level() -> None:
    english = ("The value is unknown: appSettings comes from a file that was not read: "
               "configSource='x.config' names a file the collector did not fetch.")
    assert reason_text(english, "de") == (
        "Der Wert ist unbekannt: appSettings stammt aus einer Datei, die nicht gelesen wurde: "
        "configSource='x.config' nennt eine Datei, die der Sammler nicht abgerufen hat.")


def test_english_and_unknown_sentences_stay_as_written() -> None:
    assert reason_text("The config file does not exist.", "en") == "The config file does not exist."
    assert reason_text("Access is denied.", "de") == "Access is denied."
    assert reason_text(None, "de") is None
