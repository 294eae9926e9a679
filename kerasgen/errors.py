"""The exceptions of the library, and what each means to a caller.

A bad argument raises ``ParameterError`` (a ``ValueError`` naming the parameter),
another ``ValueError`` when several arguments clash, or ``FileNotFoundError``:
the CLI turns those into usage errors (exit code 2). The other classes are for
problems found in files whose arguments were fine, or in training itself (exit
code 1); ``Interrupted`` reports a training stopped by a signal.
"""

import signal


class DataError(ValueError):
    """A text file exists but cannot be used (empty, undecodable)."""


class CheckpointError(ValueError):
    """A run folder or checkpoint file is missing pieces, corrupt or truncated."""


class NewerFormatError(CheckpointError):
    """A run folder written by a newer kerasgen, in a format this one does not read."""


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


class ParameterError(ValueError):
    """A bad value for one named parameter of the API.

    ``param`` is the parameter's Python name (``batch_size``); the message says what
    is wrong in the API's own words, so a Python user reads ``batch_size must be at
    least 1, got 0``. The CLI shows the same problem under the flag that set it
    (``--batch_size``).
    """

    def __init__(self, param: str, problem: str):
        self.param, self.problem = param, problem
        super().__init__(f"{param} {problem}")


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM; the latest checkpoint was saved first."""

    def __init__(self, checkpoint: str | None, step: int, signum: int = signal.SIGINT):
        saved = f"checkpoint saved to {checkpoint}" if checkpoint else "nothing trained yet"
        super().__init__(f"interrupted at step {step}; {saved}")
        self.checkpoint, self.step, self.signum = checkpoint, step, signum
