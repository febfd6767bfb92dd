"""Errors that mean "the user asked for something impossible", reported as one line, no traceback."""


class ConfigError(ValueError):
    """A bad config value, path or data file: the message names the key or file and what is wrong."""
