"""Exceptions the library raises for problems that are not a bad argument.

Bad arguments raise the built-in ``ValueError`` / ``FileNotFoundError``
(the CLI turns those into usage errors, exit code 2). The classes here are
for problems found in files whose arguments were fine (exit code 1).
"""


class DataError(ValueError):
    """A text file exists but cannot be used (empty, undecodable)."""


class CheckpointError(ValueError):
    """A run folder or checkpoint file is missing pieces, corrupt or truncated."""


class DistributedError(RuntimeError):
    """Multi-device or multi-worker training failed (e.g. a worker died)."""


class DivergedError(RuntimeError):
    """The loss or the weights stopped being finite numbers; nothing non-finite was saved."""


class StorageError(RuntimeError):
    """A file of the run folder could not be written (a full disk, say).

    The files written before it are intact.
    """


class RunLockedError(RuntimeError):
    """Another trainer holds the run folder."""
