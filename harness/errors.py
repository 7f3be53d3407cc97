"""The one exception type for mistakes a user can fix, the CLI's exit statuses, and how the
CLI shows such a mistake and any text it did not write itself.

The CLI prints a ``UserError`` as one line and exits with status 2; anything else is a bug and
keeps its traceback. `printable` is the one rendering of untrusted text (a name from a results
row, a file name, an error message) for a terminal or a report: one line of printable
characters, so that a shared folder cannot move the cursor, retitle or recolour the viewer's
terminal, or reorder what it shows.
"""

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator

EXIT_FAILED = 1  # a cell failed (its row says why)
EXIT_USER_ERROR = 2
# A signal paused the run (SIGTERM, SIGUSR1, SIGUSR2: harness.train.preempt): checkpointed,
# a rerun resumes; distinct from 143 ("killed by SIGTERM"), which now means the signal came
# before the run could catch it.
EXIT_PAUSED = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def printable(text: object, lines: bool = False) -> str:
    """`text` as one line of printable characters: every character `str.isprintable` refuses
    (C0/C1 controls such as ESC, BEL, NUL, newline; the bidi and other format controls such as
    U+202E; separators but the space; unassigned code points) becomes its Python escape
    (``\\x1b``, ``\\n``, ``\\u202e``), visible and inert. `lines`: a document of several
    lines, each made printable, its newlines kept."""
    text = str(text)
    if lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class UserError(Exception):
    """Bad input: the message names the file/field and says how to fix it."""


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """What the CLI does with a user's mistake, for any script: a `UserError` (a schedule's
    `ScheduleError` included) raised inside becomes one line on stderr and exit status 2;
    anything else keeps its traceback.

        if __name__ == "__main__":
            with harness.exit_on_user_error():
                main()
    """
    try:
        yield
    except UserError as exc:
        show_user_error(exc)
        sys.exit(EXIT_USER_ERROR)


def show_user_error(exc: UserError) -> None:
    """The CLI's one line for `exc`, on stderr.

    Under torchrun every process checks the same suite and options and raises the same error:
    rank 0 alone prints it, and each process leaves it in torchrun's error file
    ($TORCHELASTIC_ERROR_FILE), so that torchrun's own failure summary shows the line instead
    of a pointer to its documentation.
    """
    line = f"error: {printable(exc)}"
    # Every process but a torchrun job's ranks 1..WORLD_SIZE-1 prints: one whose RANK or
    # WORLD_SIZE makes no sense (harness.train.replica.launch_env says why) is not one of them.
    try:
        rank = int(os.environ.get("RANK", "0"))
        quiet = 0 < rank < int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        quiet = False
    if not quiet:
        print(line, file=sys.stderr)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        with contextlib.suppress(OSError), open(error_file, "w", encoding="utf-8") as handle:
            # torch's own layout (ErrorHandler.record_exception); the line is the "traceback".
            info = {"py_callstack": line, "timestamp": str(int(time.time()))}
            json.dump({"message": {"message": line, "extraInfo": info}}, handle)
