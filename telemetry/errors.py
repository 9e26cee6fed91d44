"""Errors that end a command with one line on stderr instead of a traceback."""


class UsageError(Exception):
    """A bad flag, setting or input file: the command exits 2 and names the problem."""


class RedisUnavailable(Exception):
    """Redis could not be reached; long-running commands retry, one-shot commands exit 1."""
