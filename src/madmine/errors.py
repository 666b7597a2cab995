"""The one exception type users see: a message that says what, where and what to do."""


class MadmineError(Exception):
    """A user-facing failure; the CLI prints it without a traceback and exits non-zero."""
