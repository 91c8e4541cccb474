"""Where the data folders shipped with cas-audit (migrations, rules) live on disk."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def data_dir(name: str) -> Path:
    """The folder `name` (e.g. "migrations", "rules") as shipped with this installation.

    A wheel carries it as `scanner/_data/<name>`; a source checkout or editable install
    has it at the top of the repository, next to the `scanner` package.
    """
    packaged = importlib.resources.files("scanner") / "_data" / name
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    in_checkout = Path(__file__).resolve().parents[2] / name
    if in_checkout.is_dir():
        return in_checkout
    raise FileNotFoundError(
        f"the {name!r} data folder is missing from this installation "
        f"(looked for {packaged} and {in_checkout})"
    )
