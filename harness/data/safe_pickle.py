"""Reading CIFAR-10's pickled batch files without executing code: an allow-listed unpickler.

Pickle runs whatever callable a file names; a dataset found on a shared disk is not trusted
code. `SafeUnpickler` resolves only the numpy globals an ndarray needs and refuses the rest,
so a crafted file is an error message, never a program.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from harness.errors import UserError


def _allowed_globals() -> dict[tuple[str, str], Any]:
    # The official batch files (written by Python 2 numpy) reference exactly these three
    # globals; numpy >= 2 pickles the same function under ``numpy._core``. Anything else could
    # run arbitrary code on load, so it is refused.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class SafeUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR-10 batch files: only the numpy globals an ndarray needs resolve."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        super().__init__(file, encoding="latin1")
        self._name = name
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UserError(
                f"{self._name}: refusing to unpickle global '{module}.{name}': "
                "not a CIFAR-10 batch file"
            ) from None


def read_batch(path: Path, hint: str = "check the path") -> dict[str, Any]:
    """One batch (or ``batches.meta``) file as a dict with ``str`` keys, loaded safely."""
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, str(path)).load()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; {hint}") from None
    except UserError:
        raise
    except Exception as e:  # any malformed pickle: EOFError, UnpicklingError, ValueError, ...
        raise UserError(
            f"{path}: not a CIFAR-10 batch file ({type(e).__name__}: {e})".replace("\n", " ")
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a CIFAR-10 batch file (holds {type(obj).__name__})")
    return obj
