"""The history database: every scan run, server result, config file and finding."""

from scanner.store.db import default_url, upgrade_database
from scanner.store.repo import (
    FindingRow,
    PlannedServer,
    RunRow,
    Store,
    UnknownRunError,
    open_store,
)

__all__ = [
    "FindingRow",
    "PlannedServer",
    "RunRow",
    "Store",
    "UnknownRunError",
    "default_url",
    "open_store",
    "upgrade_database",
]
