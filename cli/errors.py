"""Library exceptions -> one-line Click errors with the right exit code."""

from __future__ import annotations

import functools
import os
import re
import signal
import sys

import click

from kerasgen.errors import (
    CheckpointError,
    DataError,
    DistributedError,
    DivergedError,
    Interrupted,
    ParameterError,
    RunLockedError,
    StorageError,
)

EXIT_INTERRUPTED = 130  # the shell's code for a Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141, as a tool killed by SIGPIPE exits
OUT_OF_MEMORY = (
    "not enough memory{}; use a smaller model (--rnn_size, --num_layers) or "
    "fewer streams (--batch_size, --num_samples)"
)
RUNTIME_ERRORS = (
    DataError,
    CheckpointError,
    DistributedError,
    DivergedError,
    RunLockedError,
    StorageError,
)


class UsageFailure(click.ClickException):
    """A bad argument found after parsing (missing folder, text too short): exit 2."""

    exit_code = 2


def library_errors(fn):
    """Run a command body, reporting library errors as `Error: ...` lines.

    Problems inside files the user pointed at (DataError, CheckpointError),
    failed or diverged training, a full disk and a run folder in use are runtime
    errors (exit 1); other ValueError / FileNotFoundError mean the arguments
    were wrong (exit 2). A stop signal exits with 128 + its number (130 for
    Ctrl-C, 143 for SIGTERM), after the latest checkpoint was saved. A reader
    that closed the pipe (``kerasgen sample | head``) ends the command quietly.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            click.echo(f"\n{e}", err=True)
            sys.exit(128 + int(e.signum))
        except KeyboardInterrupt:  # before training started: nothing to save
            click.echo("\ninterrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            closed_pipe()
        except MemoryError:
            raise click.ClickException(OUT_OF_MEMORY.format("")) from None
        except RUNTIME_ERRORS as e:
            raise click.ClickException(in_flags(str(e))) from None
        except ParameterError as e:
            raise UsageFailure(f"{flag_of(e.param)} {in_flags(e.problem)}") from None
        except (ValueError, FileNotFoundError) as e:
            raise UsageFailure(in_flags(str(e))) from None
        except OSError as e:  # a file the system would not read or write
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None
        except Exception as e:
            if type(e).__name__ != "ResourceExhaustedError":  # TensorFlow's out-of-memory
                raise
            shape = re.search(r"tensor with shape\[[\d,]+\]", str(e))
            raise click.ClickException(
                OUT_OF_MEMORY.format(f" (a {shape.group(0)})" if shape else "")
            ) from None

    return wrapper


def flag_of(param: str) -> str:
    """The flag that sets the library parameter ``param`` in the running command
    (``--batch_size``, ``-n``, ``--text`` for ``text_file``), or ``--param`` when the
    command has none of that name."""
    return _flags().get(param, f"--{param}")


def in_flags(message: str) -> str:
    """A library message in the command's words. The parameters it names become the
    command's flags: a name with an underscore (``save_dir``, ``text_file``) wherever it
    stands, any name where it is given a value in Python's words (``comments=False``:
    ``--no_comments``; ``level='bpe'``: ``--level bpe``)."""
    flags, off = _flags(), _flags(off=True)

    def flag(match):
        name, value = match.group(1), match.group(2)
        if name not in flags or not (value or "_" in name):
            return match.group(0)
        if value is None:
            return flags[name]
        if value == "=True":
            return flags[name]
        if value == "=False" and name in off:
            return off[name]
        return f"{flags[name]} {value[1:].strip(chr(39) + chr(34))}"

    # A name, not part of a flag or a path (``/runs/save_dir/x``, ``text_file.txt``).
    name = r"(?<![-\w/.])([a-z][a-z0-9_]*)\b(?!\.\w|/)"
    return re.sub(name + r"(='[^']*'|=\"[^\"]*\"|=[\w.-]+)?", flag, message)


def _flags(off: bool = False) -> dict[str, str]:
    """Each option of the running command by its parameter name: its first long flag (with
    ``off``: the flag that turns a boolean option off, where it has one)."""
    ctx = click.get_current_context(silent=True)
    options = [
        o for o in (ctx.command.params if ctx is not None else ()) if isinstance(o, click.Option)
    ]
    if off:
        return {o.name: max(o.secondary_opts, key=len) for o in options if o.secondary_opts}
    return {o.name: max(o.opts, key=len) for o in options}


def closed_pipe():
    """The reader of standard output went away: exit quietly with the shell's code for
    SIGPIPE, as Unix tools do, without a message (nor one from Python's final flush)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no descriptor behind sys.stdout
        pass
    sys.exit(EXIT_BROKEN_PIPE)
