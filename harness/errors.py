"""The one exception type for mistakes a user can fix.

The CLI prints a ``UserError`` as one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message names the file/field and says how to fix it."""
