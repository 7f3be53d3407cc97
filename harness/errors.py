"""The one exception type for mistakes a user can fix, and the CLI's exit statuses.

The CLI prints a ``UserError`` as one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""

import signal

EXIT_FAILED = 1  # a cell failed (its row says why)
EXIT_USER_ERROR = 2
# A signal paused the run (SIGTERM, SIGUSR1, SIGUSR2: harness.train.preempt): checkpointed,
# a rerun resumes; distinct from 143 ("killed by SIGTERM"), which now means the signal came
# before the run could catch it.
EXIT_PAUSED = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class UserError(Exception):
    """Bad input: the message names the file/field and says how to fix it."""
