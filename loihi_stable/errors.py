"""One error type for problems a user can fix; the CLI prints it on one line."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix."""
