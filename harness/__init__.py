"""harness: test "Don't Decay the Learning Rate, Increase the Batch Size" on real hardware."""

__version__ = "0.1.0"
