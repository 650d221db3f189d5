"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """Something the user gave is wrong; the message says what and what to do."""
