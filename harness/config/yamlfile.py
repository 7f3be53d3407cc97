"""Reading a suite file: plain data for validation, and the line of any key path for errors.

A suite is untrusted input, so the bytes are bounded before parsing and the parse events are
checked before anything is built from them: anchors and aliases (a few hundred bytes of
"billion laughs" expand to gigabytes; a self-referencing alias is a cycle), custom tags and
absurd nesting are refused, since no honest suite needs them. ruamel.yaml's round-trip
loader keeps each key's position (`.lc`), so a line is looked up only when an error needs it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    NodeEvent,
)
from ruamel.yaml.scalarbool import ScalarBoolean

from harness.errors import UserError

MAX_SUITE_BYTES = 1 << 20  # the paper's suites are ~3 KiB
MAX_DEPTH = 32  # suites nest 5 deep; the composer recurses once per level
# The tags of plain data; any other (python/object, timestamp, set, ...) is refused.
_PLAIN_TAGS = {
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")
}


@dataclass(frozen=True)
class Document:
    """A parsed suite file: `data` holds only dict, list, str, int, float, bool and None."""

    path: Path
    data: Any
    tree: Any  # ruamel's round-trip tree, for positions

    def line_of(self, where: Sequence[Any]) -> int | None:
        """1-based line of the deepest key or item of `where` present in the file."""
        node, line = self.tree, _start_line(self.tree)
        for part in where:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0] + 1
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line = node.lc.item(part)[0] + 1
            else:
                break
            node = node[part]
        return line


def read_suite_file(path: Path) -> Document:
    """Parse `path` as a suite document; `UserError` naming the file for anything unreadable."""
    if not path.exists():
        raise UserError(f"{path}: no such suite file; give the path to a suite YAML file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the path to a suite YAML file")
    raw = read_regular(path, MAX_SUITE_BYTES + 1)
    if len(raw) > MAX_SUITE_BYTES:
        raise UserError(
            f"{path}: larger than {MAX_SUITE_BYTES >> 20} MiB; a suite is a short YAML file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; a suite is a YAML file") from None
    tree = parse_yaml(text, str(path))
    if not isinstance(tree, Mapping):
        raise UserError(f"{path}: a suite must be a YAML mapping (name:, dataset:, ...)")
    return Document(path=path, data=plain(tree), tree=tree)


def read_regular(path: Path, limit: int, what: str = "a suite YAML file") -> bytes:
    """At most `limit` bytes of `path`, refusing anything but a regular file before reading.

    A FIFO or a device would block the read (or never end), so the file is stat'ed first and
    opened without blocking, and the open file is checked again (it may have been swapped).
    `what` names the file expected, for the errors.
    """
    not_regular = f"{path}: not a regular file; give the path to {what}"
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise UserError(not_regular)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; give the path to {what}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc}); give {what}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(not_regular)
        return handle.read(limit)


def parse_yaml(text: str, where: str, lines: bool = True) -> Any:
    """The round-trip tree of `text`; `UserError` prefixed with `where` if it is not safe YAML.

    `lines`: whether `where` is a file whose line numbers help (not a one-line value).
    """
    yaml = YAML(typ="rt")
    try:
        _check_events(yaml.parse(text), where, lines)
        return yaml.load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None and lines else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{where}{line}: not valid YAML: {problem.splitlines()[0]}") from None


def _check_events(events: Iterable[Event], where: str, lines: bool) -> None:
    depth = 0
    for event in events:
        at = f"{where}:{event.start_mark.line + 1}" if lines else where
        if isinstance(event, AliasEvent) or (
            isinstance(event, NodeEvent) and event.anchor is not None
        ):
            raise UserError(
                f"{at}: YAML anchors and aliases (&, *) are not allowed in a suite; "
                "write the values out"
            )
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _PLAIN_TAGS:
            raise UserError(f"{at}: YAML tag {tag!r} is not allowed in a suite; remove it")
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise UserError(
                    f"{at}: nested more than {MAX_DEPTH} levels deep; a suite is a shallow mapping"
                )
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def plain(node: Any) -> Any:
    """`node` with ruamel's annotated subclasses replaced by the builtin types they extend.

    Pydantic and the cell-id hash then see exactly what a plain loader would give; in
    particular ruamel's ScalarBoolean is an int, not a bool.
    """
    if isinstance(node, Mapping):
        return {plain(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool | ScalarBoolean):
        return bool(node)
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _start_line(tree: Any) -> int | None:
    lc = getattr(tree, "lc", None)
    return None if lc is None or lc.line is None else lc.line + 1
