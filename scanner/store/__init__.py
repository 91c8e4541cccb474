"""The history database: every scan run, server result, config file and finding."""

from scanner.store.repo import *  # noqa: F403 - the public names are repo's __all__
from scanner.store.repo import __all__ as __all__
