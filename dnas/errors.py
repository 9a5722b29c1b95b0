"""Exceptions for bad input that dnas reports to the user as one line (the CLI prints them without
a traceback). Each message says what was wrong and how to fix it."""


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message says what to change."""


class WorkdirLocked(RuntimeError):
    """Another process is running in the workdir (it holds the workdir's lock); the message names
    that process and what to do."""
