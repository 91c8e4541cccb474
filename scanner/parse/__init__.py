"""Parse: turn raw collected data into typed observations (pure, no I/O)."""
