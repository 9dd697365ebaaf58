"""Exceptions that the command line turns into a one-line error message."""


class AnimbenchError(Exception):
    """An error the user can act on; the CLI prints its message on one line and exits 2."""


class ConfigError(AnimbenchError):
    """A bad configuration key or value. The message names the key (dotted path)."""


class DataError(AnimbenchError):
    """A missing, corrupt or truncated input file. The message names the file."""


class NotImplementedYet(AnimbenchError):
    """A capability that is planned in the workflow but not built yet. Says so loudly."""
