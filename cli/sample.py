"""``kerasgen sample`` (also ``python cli/sample.py``): the flags of char-rnn's sample.py."""

from __future__ import annotations

import sys
import tempfile

import click

import kerasgen
from kerasgen.errors import ParameterError
from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import (
    checkpoint_option,
    constrain_option,
    exported_option,
    option,
    run_folder_option,
    truncation_options,
    verbose_option,
)

SEPARATOR = "\n\n----\n\n"  # between samples


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@run_folder_option
@option(
    "-n",
    "n",
    default=500,
    type=int,
    help="Number of characters to generate (tokens, for a word- or bpe-level model).",
)
@option(
    "--prime",
    default="",
    help=r"Text to start from (\n, \t and \\ are decoded; tokenized as in training). "
    "It is read after the run's preamble, as the start of a new paragraph.",
)
@option(
    "--stop",
    "stop",
    multiple=True,
    help=r"End each sample just before the first time it generates this text (\n, \t "
    r"and \\ decoded; repeatable), e.g. --stop '\n\n' for one speech.",
)
@option(
    "--sample",
    "sample",
    default=1,
    type=int,
    help="0: argmax at each step; 1: sample at each step; 2: sample only after a space.",
)
@option(
    "--temperature",
    default=1.0,
    type=float,
    help="Divide the logits by this (< 1: safer, > 1: wilder).",
)
@truncation_options
@option(
    "--seed",
    default=None,
    type=int,
    help="Random seed: the same seed gives the same text. [default: a fresh one]",
)
@option(
    "--num_samples",
    default=1,
    type=int,
    help="Generate this many independent samples together as one batch.",
)
@checkpoint_option("use")
@click.option(
    "--jit_compile/--no_jit_compile",
    "--jit-compile/--no-jit-compile",
    "jit_compile",
    default=True,
    show_default=True,
    help="XLA-compile the sampling loop: much faster, at the cost of more peak memory "
    "while it compiles.",
)
@option(
    "--output",
    "-o",
    "output",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write the text to this file (UTF-8), as it is generated.",
)
@option(
    "--syntax",
    default=None,
    type=click.Choice(list(kerasgen.SYNTAXES)),
    help="python: print only complete top-level blocks that Python compiles, drawing a "
    "block again when it fails (the prime is part of the first block); blocks are "
    "added until -n characters follow the prime. The counts go to stderr.",
)
@constrain_option("[default: python with --syntax python on a character-level run, else none]")
@option(
    "--tries",
    default=kerasgen.DEFAULT_TRIES,
    type=int,
    help="With --syntax: draws per block; when all fail, a note says so and the sample ends.",
)
@exported_option("Run", "to check an export: the same --seed prints what the run prints")
@verbose_option
@library_errors
def sample_command(save_dir, n, prime, stop, checkpoint, jit_compile, output, exported, **options):
    """Generate text from the model in SAVE_DIR, printing it as it comes.

    With --num_samples N the first sample is printed as it is generated and
    the others follow it, separated by ----. Ctrl-C stops at once and keeps
    what was printed (exit code 130).
    """
    kerasgen.configure_cpu_threads()
    stop = [kerasgen.decode_prime(s) for s in stop]
    if exported is not None:
        model = kerasgen.load_exported(exported)
    else:
        model = kerasgen.load(save_dir, checkpoint, jit_compile=jit_compile)
    if exported is None and model.checkpoint != checkpoint:
        click.echo(
            f"{save_dir} has no {checkpoint} checkpoint yet; using {model.checkpoint}", err=True
        )
    stats = kerasgen.BlockStats() if options["syntax"] else None
    num_samples = options["num_samples"]
    if num_samples > 1:  # before the batch is built
        _allow_open_files(num_samples + 64)  # a spool each, and what the runtime holds open
    pieces = model.stream(n, kerasgen.decode_prime(prime), stop=stop, block_stats=stats, **options)
    with _Output(output) as out:
        if num_samples == 1:
            for piece in pieces:
                out.write(piece)
        else:
            _write_samples(pieces, num_samples, out)
        if stats is None:
            out.write("\n")
    if stats is not None:
        _report_blocks(stats, options["tries"])


def _report_blocks(stats, tries: int) -> None:
    """The counts of ``--syntax python`` (and each sample that ran out of tries) on stderr."""
    for sample in stats.gave_up_samples:
        click.echo(
            f"python syntax: sample {sample + 1}: no draw of the next block compiled in {tries} "
            "tries; the sample ends there",
            err=True,
        )
    unfinished = (
        f", {stats.unfinished} of them unfinished after {stats.limit:,} characters"
        if stats.unfinished
        else ""
    )
    rate = "" if stats.redraw_rate is None else f" ({stats.redraw_rate:.0%} redrawn)"
    click.echo(
        f"python syntax: kept {stats.kept} of {stats.drawn} blocks drawn{rate}; "
        f"{stats.drawn - stats.kept} thrown away{unfinished}",
        err=True,
    )


def _write_samples(pieces, num_samples: int, out) -> None:
    """The first sample as it comes; the others, spooled to temporary files meanwhile
    (so memory stays flat), after it."""
    spools = [
        tempfile.TemporaryFile("w+", encoding="utf-8", newline="") for _ in range(num_samples - 1)
    ]
    try:
        for row in pieces:
            out.write(row[0])
            for spool, piece in zip(spools, row[1:]):
                spool.write(piece)
        for spool in spools:
            out.write(SEPARATOR)
            spool.seek(0)
            for block in iter(lambda s=spool: s.read(1 << 16), ""):
                out.write(block)
    finally:
        for spool in spools:
            spool.close()


def _allow_open_files(needed: int) -> None:
    """Raise this process's limit of open files to ``needed`` if the system lets it; a
    usage error naming --num_samples if it does not."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ParameterError(
            "num_samples",
            f"needs about {needed:,} open files (one per sample) and this "
            f"system allows {hard:,}; ask for fewer samples at once",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class _Output:
    """Standard output as UTF-8 bytes, whatever the terminal's locale (and --output too),
    flushed at every write so text appears as it is generated."""

    def __init__(self, path: str | None):
        self.path, self.file = path, None
        self.stdout = getattr(sys.stdout, "buffer", None)

    def __enter__(self):
        if self.path is not None:
            self.file = open(self.path, "w", encoding="utf-8", newline="")
        return self

    def write(self, text: str) -> None:
        if not text:
            return
        if self.stdout is not None:
            self.stdout.write(text.encode("utf-8"))
            self.stdout.flush()
        else:  # a text stream without bytes underneath
            sys.stdout.write(text)
            sys.stdout.flush()
        if self.file is not None:
            self.file.write(text)
            self.file.flush()

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()
        return False


if __name__ == "__main__":
    from kerasgen_cli.native_logs import run_command

    run_command(sample_command)
