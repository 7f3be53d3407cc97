"""Suites: YAML files read safely, validated into frozen specs, expanded into planned cells.

Imports only `harness.core`, `harness.errors` and `harness.fsio`; the public entry points are
in `harness.config.suite` (`load_suite`, `select`, `Suite`, `Cell` and the spec classes).
"""
