"""harness: test "Don't Decay the Learning Rate, Increase the Batch Size" on real hardware."""

from harness.version import __version__

__all__ = ["__version__"]
