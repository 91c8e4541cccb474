"""A test-only fault hook, for the stages no real input can break.

Setting the environment variable CAS_AUDIT_TEST_FAIL_STAGE=parse makes the scan raise
an unexpected RuntimeError while interpreting each server's result, so that tests can
check what any bug there does (exit 4, the traceback in the error log);
CAS_AUDIT_TEST_FAIL_STAGE=config raises inside the config file evaluator
(scanner/parse/configfile.py), which must never turn its own bug into a finding.
CAS_AUDIT_TEST_FAIL_STAGE=preflight raises in each server's preflight checks (every
server is still reported, exit 4). The collector's output is untrusted and handled, so no hostile server reaches that code with an
unexpected error; the other stages are broken in tests through real inputs (a hostile
peer, a corrupt database, a full disk). Documented in README.md, "Reliability".
"""

from __future__ import annotations

import os

ENV = "CAS_AUDIT_TEST_FAIL_STAGE"


def fail_at(stage: str) -> None:
    """Raise RuntimeError when CAS_AUDIT_TEST_FAIL_STAGE names `stage`."""
    if os.environ.get(ENV) == stage:
        raise RuntimeError(f"failure injected at stage {stage!r} by {ENV}")
