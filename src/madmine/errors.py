"""The one exception type users see: a message that says what, where and what to do."""


class MadmineError(Exception):
    """A user-facing failure; the CLI prints it without a traceback and exits non-zero."""


class ConfigError(MadmineError):
    """A configuration value is missing, unknown or invalid."""


class EvaluationError(MadmineError):
    """A measurement cannot be made as asked; nothing was written."""
