"""Errors that mean "the user asked for something impossible", reported as one line, no traceback."""

from hydra.errors import CompactHydraException


class ConfigError(CompactHydraException, ValueError):
    """A bad config value, path or data file: the message names the key or file and what is wrong.

    Hydra prints a CompactHydraException as its message alone and exits non-zero; in a multirun the
    other jobs still run first.
    """


class OutputError(CompactHydraException, OSError):
    """A write the job cannot make (a full disk, a read-only file system, no permission), named by
    its path in one line: it is the machine's state, not a bug to trace."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, not "[Errno 28] ..."


class RankFailed(CompactHydraException, RuntimeError):
    """A rank of a multi-process job, started by Lightning, ended in failure: the job fails too."""
