"""``kerasgen evaluate``: held-out loss of a run, and optionally how much of its Python
compiles."""

from __future__ import annotations

import json

import click

import kerasgen
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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@run_folder_option
@option(
    "--data_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Score the validation split of DATA_DIR/input.txt, cut as training cut it "
    "[default: the run's training data].",
)
@option(
    "--text",
    "text_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Score this whole file instead of a validation split.",
)
@option(
    "--encoding", default=None, help="Encoding of the text [default: the run's training encoding]."
)
@checkpoint_option("score")
@option(
    "--streams",
    default=kerasgen.STREAMS,
    type=int,
    help="Contiguous streams the text is cut into and scored in parallel; every "
    "character is scored once whatever the number.",
)
@option(
    "--python_syntax",
    default=0,
    type=int,
    help="Also generate this many samples and report the fraction of their complete "
    "top-level blocks that Python compiles (0: off).",
)
@option(
    "--real_words",
    default=0,
    type=int,
    help="Also generate this many samples and report the share of their words (runs of "
    "letters, digits and _) that occur in the training text (0: off).",
)
@option(
    "-n",
    "n",
    default=None,
    type=int,
    help="Tokens (characters at char level) per sample for --python_syntax [default: "
    f"{kerasgen.SYNTAX_SAMPLE_CHARS}] and --real_words [default: {kerasgen.REAL_WORDS_TOKENS}].",
)
@option(
    "--temperature",
    default=1.0,
    type=float,
    help="Sampling temperature for --python_syntax and --real_words.",
)
@truncation_options
@option(
    "--seed",
    default=0,
    type=int,
    help="Random seed for the samples of --python_syntax and --real_words.",
)
@option(
    "--prime",
    default="",
    help=r"With --python_syntax: start every sample with this text (e.g. 'def '; \n, \t "
    r"and \\ decoded) and also count the samples whose first block finishes within "
    "-n characters, and how many of those compile.",
)
@constrain_option("With --python_syntax and --real_words [default: none].")
@exported_option("Score", "on the same text: what an export or its --quantize costs")
@option(
    "--json",
    "as_json",
    is_flag=True,
    default=False,
    help="Print one JSON object instead of a table.",
)
@verbose_option
@library_errors
def evaluate_command(
    save_dir, checkpoint, data_dir, text_file, prime, as_json, exported, **options
):
    """Score the model in SAVE_DIR on held-out text (nats and bits per character).

    Every next character (token, at word and bpe levels) of the text is scored
    exactly once (no subsampling); a transformer reads half-overlapping windows
    of its context. Word- and bpe-level runs also report nats per token.
    With --python_syntax N, N samples are generated (each starting at a line
    start) and cut into top-level blocks at column-0 lines that begin a new
    statement: not a comment, not else/elif/except/finally or a closing
    bracket, not the def/class after a decorator, and not while the block so
    far is unfinished (open bracket or triple-quoted string, trailing
    backslash, missing body). Text before the first block and the last,
    cut-off block of each sample are not counted. The rate comes with a 95%
    Wilson score interval, and the share of samples that never returned to
    column 0 (nothing was counted from them) is reported. With --real_words
    N, N samples are generated and the share of their words (runs of
    letters, digits and _) that occur in the training text is reported.
    With --exported DIR, the export in DIR is scored the same way, every logit
    from its step.
    """
    kerasgen.configure_cpu_threads()
    if exported is not None:
        model = kerasgen.load_exported(exported)
    else:
        model = kerasgen.load(save_dir, checkpoint)
    result = model.evaluation(
        data_dir,
        text_file=text_file,
        prime=kerasgen.decode_prime(prime),
        **options,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    loss, syntax, words = result.loss, result.python_syntax, result.real_words
    rows = _loss_rows(loss, exported or save_dir, model.describe())
    if syntax is not None:
        rows += _syntax_rows(syntax, result.prime, result.options)
    if words is not None:
        rows += _words_rows(words, loss.level, result.options)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


def _loss_rows(loss, folder: str, described: str) -> list[tuple[str, str]]:
    """The table's rows for the held-out loss and the start penalty."""
    rows = [
        ("run", f"{folder} ({described})"),
        ("text", loss.source),
        (
            "targets",
            f"{loss.targets:,} characters"
            if loss.level == "char"
            else f"{loss.targets:,} tokens ({loss.chars:,} characters)",
        ),
        ("loss", f"{loss.nats_per_char:.4f} nats/char  {loss.bits_per_char:.4f} bits/char"),
    ]
    if loss.level == "word":
        rows.append(
            (
                "loss per token",
                f"{loss.nats_per_token:.4f} nats/token ({loss.unknown:,} "
                "<unk> targets; per char adds their spelling)",
            )
        )
    elif loss.level != "char":
        rows.append(("loss per token", f"{loss.nats_per_token:.4f} nats/token"))
    start = loss.start
    if start is not None:
        rows.append(
            (
                "start penalty",
                f"{start.ratio:.3f}: first {start.chars} characters of "
                f"{start.lines} lines, {start.cold_nats_per_char:.4f} "
                f"nats/char from where sample starts, "
                f"{start.warm_nats_per_char:.4f} after the text before",
            )
        )
    return rows


def _syntax_rows(syntax, prime: str, options) -> list[tuple[str, str]]:
    """The table's rows for --python_syntax (and its --prime)."""
    rows = [
        (
            "python syntax",
            f"{_rate(syntax.ok, syntax.total, syntax.interval)} "
            f"top-level blocks compile ({syntax.samples} samples of "
            f"{syntax.chars:,} chars, {_settings(options)})",
        ),
        (
            "no block",
            f"{syntax.never_at_column_0:.1%} of samples never returned to "
            "column 0 for a second block (nothing counted from them)",
        ),
    ]
    if prime:
        rows.append(
            (
                f"prime {prime!r}",
                f"{syntax.finished}/{syntax.samples} first blocks finished within "
                f"{syntax.chars:,} chars; of those, "
                f"{_rate(syntax.finished_ok, syntax.finished, syntax.finished_interval)}"
                " compile",
            )
        )
    return rows


def _words_rows(words, level: str, options) -> list[tuple[str, str]]:
    """The table's row for --real_words."""
    rate = "n/a" if words.rate is None else f"{words.rate:.1%}"
    unit = "characters" if level == "char" else "tokens"
    missing = "; not found: " + ", ".join(words.missing) if words.missing else ""
    return [
        (
            "real words",
            f"{rate}: {words.found:,}/{words.total:,} generated words occur "
            f"in the training text ({words.samples} samples of "
            f"{words.tokens:,} {unit}, {_settings(options)}){missing}",
        )
    ]


def _settings(options) -> str:
    """``temperature 1``, plus ``top_k 5`` / ``top_p 0.9`` / ``constrained to python`` when
    they are on."""
    settings = f"temperature {options.temperature:g}"
    if options.top_k:
        settings += f", top_k {options.top_k}"
    if options.top_p < 1.0:
        settings += f", top_p {options.top_p:g}"
    if options.constrain:
        settings += f", constrained to {options.constrain}"
    return settings


def _rate(ok: int, total: int, interval) -> str:
    """``62.0% (95% CI 55.1-68.4%): 155/250``, or ``n/a: 0/0``."""
    if not total:
        return f"n/a: {ok}/{total}"
    lo, hi = interval
    return f"{ok / total:.1%} (95% CI {lo:.1%}-{hi:.1%}): {ok}/{total}"


if __name__ == "__main__":
    from kerasgen_cli.native_logs import run_command

    run_command(evaluate_command)
