"""The pure core: schedule algebra, schedule rules, naming and shape rules.

No torch, no pydantic, no files: every other layer may import it, and it imports only the
standard library and `harness.errors`, so its rules can be property-tested in isolation.
"""
