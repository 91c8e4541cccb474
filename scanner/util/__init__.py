"""Helpers with no knowledge of Exchange: TOML and XML reading, files, data paths."""
