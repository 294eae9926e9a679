"""Library exceptions -> one-line Click errors with the right exit code."""

from __future__ import annotations

import functools
import sys

import click

from kerasgen.errors import CheckpointError, DataError, DistributedError

EXIT_INTERRUPTED = 130  # the shell's code for a Ctrl-C


class UsageFailure(click.ClickException):
    """A bad argument found after parsing (missing folder, text too short): exit 2."""

    exit_code = 2


def library_errors(fn):
    """Run a command body, reporting library errors as `Error: ...` lines.

    Problems inside files the user pointed at (DataError, CheckpointError) and
    failed distributed runs (DistributedError) are runtime errors (exit 1); other ValueError / FileNotFoundError mean the
    arguments were wrong (exit 2).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from kerasgen.train import Interrupted

        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            click.echo(f"\n{e}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except KeyboardInterrupt:  # before training started: nothing to save
            click.echo("\ninterrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (DataError, CheckpointError, DistributedError) as e:
            raise click.ClickException(str(e)) from None
        except (ValueError, FileNotFoundError) as e:
            raise UsageFailure(str(e)) from None

    return wrapper
