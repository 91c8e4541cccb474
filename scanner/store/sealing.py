"""The `Store`'s part that reads the seal chain (the chain itself: seal.py)."""

from __future__ import annotations

from scanner.store.base import StoreBase
from scanner.store.seal import Verification, head_seal, run_changes_through, run_seal, verify_chain


class Seals(StoreBase):
    """Reading the seal chain."""

    def verify_chain(self) -> Verification:
        """Recompute the whole chain from the history's rows (`cas-audit verify`)."""
        with self._read("verify the seal chain of the history") as session:
            return verify_chain(session)

    def run_seal(self, run_id: int) -> str | None:
        """The seal of run `run_id` (None while it is not sealed)."""
        with self._read(f"read the seal of run {run_id}") as session:
            return run_seal(session, run_id)

    def run_changes_through(self, run_id: int) -> int | None:
        """The newest change id the run's link covers: recorded before the run was sealed at
        its end (None: not sealed)."""
        with self._read(f"read the seal of run {run_id}") as session:
            return run_changes_through(session, run_id)

    def head_seal(self) -> str | None:
        """The seal of the chain's newest link (None: nothing sealed yet)."""
        with self._read("read the newest seal of the history") as session:
            return head_seal(session)
