"""Placeholder re-export until the lock module lands (replaced in the results-layer change)."""

from harness.results.store import claim, lock_path

__all__ = ["claim", "lock_path"]
