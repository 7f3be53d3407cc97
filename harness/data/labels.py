"""Class labels as a dataset file holds them, checked once for every dataset read into host
arrays (CIFAR-10, CIFAR-100, the user's `arrays` .npz).

A label is an integer in 0..classes-1, one per image. Anything else is refused, never
converted: ``np.asarray([1.7]).astype(int64)`` is 1, and a cell trained on such labels finishes
"ok" with a meaningless loss; strings, a dict, or 10**30 would otherwise fail later with a
traceback. `class_labels` is the one check; each reader phrases its refusal (the file and the
field to fix) around the reason it returns.
"""

from __future__ import annotations

import numpy as np


class LabelError(ValueError):
    """Why a file's labels are not class labels; the reader adds which file and field."""

    def __init__(self, reason: str, low: int | None = None, high: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Set when the labels are integers but some fall outside 0..classes-1.
        self.low, self.high = low, high


def class_labels(raw: object, n: int, classes: int) -> np.ndarray:
    """`raw` as (n,) int64 labels in 0..classes-1; `LabelError` saying why not.

    `raw`: a numpy array or a list (a pickled batch file's), of Python or numpy integers.
    Booleans, floats (even whole ones), strings and objects are refused: a label that is not
    an integer is a sign of a wrong file or column, not something to round.
    """
    if isinstance(raw, dict | set | str | bytes) or raw is None:
        raise LabelError(f"a {type(raw).__name__}, not a list of integers")
    try:
        y = np.asarray(raw)
    except (ValueError, TypeError):  # ragged nested lists
        raise LabelError("not a flat list of integers") from None
    if y.ndim != 1 or y.shape[0] != n:
        raise LabelError(f"an array of shape {y.shape}, not one label per image ({n},)")
    if y.dtype.kind == "O":  # Python ints beyond int64 (10**30), or mixed objects
        bad = next((v for v in y if not _integer(v)), None)
        if bad is not None:
            raise LabelError(f"{type(bad).__name__} {_show(bad)}, not an integer")
        low, high = (int(min(y)), int(max(y))) if n else (0, 0)
    elif y.dtype.kind in "iu":
        low, high = (int(y.min()), int(y.max())) if n else (0, 0)
    else:
        first = _show(y[0]) if n else ""
        what = {"f": "floats", "b": "booleans", "U": "strings", "S": "bytes", "c": "complex"}
        kind = what.get(y.dtype.kind, str(y.dtype))
        raise LabelError(f"{kind} ({y.dtype}, e.g. {first}), not integers")
    if low < 0 or high >= classes:
        raise LabelError(f"labels {_show(low)}..{_show(high)}, outside 0..{classes - 1}", low, high)
    return y.astype(np.int64)


def _integer(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _show(v: object) -> str:
    text = repr(v.item() if isinstance(v, np.generic) else v)
    return text if len(text) <= 40 else text[:37] + "..."
