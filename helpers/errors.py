"""The one exception type for a user's mistake: the CLI prints its message without a traceback."""


class UserError(Exception):
    """Bad input or settings: the message says what happened, which file or parameter, what to do."""
