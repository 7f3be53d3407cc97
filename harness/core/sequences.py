"""How a token stream becomes language-model examples: the arithmetic, without torch.

One rule for every sequence kind (`text`, `tokens`; harness.data.text reads them): a stream of
L tokens is cut into non-overlapping windows of `block` tokens with stride `block`; window i
is the input x = s[i·block : (i+1)·block] and the target y = s[i·block + 1 : (i+1)·block + 1]
(the next token of each position). Consecutive windows share one token (the last target of
window i is the first input of window i + 1), so every token but the first is a target exactly
once and the stream holds (L - 1) // block windows; the remainder at the end is dropped. An
example is one window; N, what the schedules are planned for, is the number of training
windows. `text`'s held-out part is the last `held_out` of the file's bytes (default 10 %),
cut the same way; `tokens` has its own val.bin.

`counts` reads only the files' sizes (os.stat), so `harness plan` knows N without reading
the data; the data layer's reader uses the same functions on what it reads.
"""

from __future__ import annotations

import os
from pathlib import Path

HELD_OUT = 0.1  # text: the last tenth of the bytes is the validation part, unless stated
TOKEN_BYTES = 2  # tokens: nanoGPT's train.bin / val.bin hold uint16 ids
TOKEN_FILES = ("train.bin", "val.bin")


def windows(length: int, block: int) -> int:
    """The examples a stream of `length` tokens holds (see the module docstring)."""
    return max(0, (length - 1) // block)


def text_split(size: int, held_out: float) -> int:
    """Where a text of `size` bytes splits: the training part is bytes [0, split), the
    held-out part [split, size) (its last round(size · held_out) bytes)."""
    return size - round(size * held_out)


def _size(path: Path, field: str, fix: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; {fix}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror}); {fix}") from None


TEXT_FIX = "give dataset.path, a UTF-8 text file"
TOKENS_FIX = "give dataset.path, a folder holding nanoGPT's train.bin and val.bin (uint16 ids)"


def text_counts(path: str, block: int, held_out: float | None) -> tuple[int, int]:
    """(training examples, held-out examples) of the text file at `path`, from its size."""
    size = _size(Path(path).expanduser(), "path", TEXT_FIX)
    split = text_split(size, HELD_OUT if held_out is None else held_out)
    return windows(split, block), windows(size - split, block)


def token_counts(path: str, block: int) -> tuple[int, int]:
    """(training examples, held-out examples) of the token folder at `path`, from its sizes."""
    root = Path(path).expanduser()
    sizes = [_size(root / name, "path", TOKENS_FIX) for name in TOKEN_FILES]
    return windows(sizes[0] // TOKEN_BYTES, block), windows(sizes[1] // TOKEN_BYTES, block)
