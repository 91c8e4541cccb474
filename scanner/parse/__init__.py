"""Parse: turn raw collected evidence into typed observations (pure, no I/O)."""
