"""Errors that mean "the user asked for something impossible", reported as one line, no traceback."""

from hydra.errors import CompactHydraException


class ConfigError(CompactHydraException, ValueError):
    """A bad config value, path or data file: the message names the key or file and what is wrong.

    Hydra prints a CompactHydraException as its message alone and exits non-zero; in a multirun the
    other jobs still run first.
    """
