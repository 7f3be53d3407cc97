"""A model from the user's own code: the `factory:` string of a suite, read without importing it.

Three spellings, told apart by their text alone (so `harness plan` checks them torch-free and
never imports anything):

* ``"pkg.module:build"``: a module imported as Python would (``PYTHONPATH``, installed
  packages), and the callable ``build`` in it (a dotted path: ``"pkg.mod:Class.build"``);
* ``"path/to/file.py:build"``: a Python file, relative to the suite file's folder (or
  absolute); its folder goes on ``sys.path`` so that it can import its neighbours;
* ``"name"``: a model an installed package registers under the entry-point group
  ``harness.models`` (``[project.entry-points."harness.models"] name = "pkg.module:build"``).

The harness calls it as ``build(num_classes=..., **kwargs)``; the string as written and the
kwargs are part of the cell id. Loading it runs the user's code, exactly as running a script
would; nothing else a suite or a results folder holds is ever imported (harness.models.factory
does the loading).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ENTRY_POINT_GROUP = "harness.models"

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*"
_ENTRY_POINT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
RESERVED_KWARGS = ("num_classes",)  # the harness passes it


@dataclass(frozen=True)
class FactoryRef:
    """Which callable builds the model, with what; plain values, hashable, no torch."""

    target: str  # the suite's `factory:` string, as written
    kwargs_json: str = "{}"  # the suite's `kwargs:`, as sorted JSON (what the cell id hashes)
    base: str | None = None  # the suite file's folder: a relative .py path starts there

    @classmethod
    def of(cls, target: str, kwargs: dict[str, Any], base: str | None = None) -> FactoryRef:
        return cls(target, json.dumps(kwargs, sort_keys=True), base)

    @property
    def kwargs(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.kwargs_json)
        return value

    @property
    def kind(self) -> str:
        return factory_kind(self.target)


def factory_kind(target: str) -> str:
    """ "file", "module" or "entry_point"; the format is assumed valid (`factory_problem`)."""
    if ":" not in target:
        return "entry_point"
    return "file" if target.rpartition(":")[0].endswith(".py") else "module"


def split_target(target: str) -> tuple[str, str]:
    """(module or file, attribute path) of a "module:attr" or "file.py:attr" target."""
    where, _, attr = target.rpartition(":")
    return where, attr


def factory_problem(target: str) -> str | None:
    """Why `target` is not a factory string, with the forms that are; None when it is one."""
    forms = (
        "use 'pkg.module:function', 'path/to/file.py:function' (relative to the suite "
        "file) or the name of an installed 'harness.models' entry point"
    )
    if not target or target != target.strip() or not target.isprintable():
        return f"{target!r} is not a factory; {forms}"
    if ":" not in target:
        if re.fullmatch(_ENTRY_POINT, target):
            return None
        return f"{target!r} is not an entry-point name; {forms}"
    where, attr = split_target(target)
    if not re.fullmatch(_DOTTED, attr):
        return f"{target!r}: {attr!r} after ':' is not a Python name; {forms}"
    if where.endswith(".py"):
        return None if where != ".py" else f"{target!r}: no file before ':'; {forms}"
    if not re.fullmatch(_DOTTED, where):
        return f"{target!r}: {where!r} is not a module name (or a .py file); {forms}"
    return None
