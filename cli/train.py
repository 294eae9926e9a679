"""``kerasgen train`` (also ``python cli/train.py``): the flags of char-rnn's train.py."""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from kerasgen.sampling import MAX_SEED
from kerasgen.vocab import BYTES, DEFAULT_MAX_VOCAB, DEFAULT_VOCAB_SIZE, LEVELS, MAX_VOCAB_SIZE
from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import (
    POSITIVE,
    RNN_FAMILIES,
    Duration,
    keep_prob_options,
    model_shape_options,
    option,
    verbose_option,
)

PRESET_HELP = (
    "Start from these shipped settings; flags typed here override them, and they "
    "override what --init_from recorded."
)


class PresetName(click.ParamType):
    """A shipped preset's name; the names come from the package's preset files."""

    name = "preset"

    def get_metavar(self, param, ctx=None):
        from kerasgen.presets import preset_names

        return "[" + "|".join(preset_names()) + "]"

    def convert(self, value, param, ctx):
        from kerasgen.presets import load_preset

        try:
            load_preset(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return value

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from kerasgen.presets import preset_names

        return [CompletionItem(n) for n in preset_names() if n.startswith(incomplete)]


class PresetOption(click.Option):
    """``--preset``, whose help lists each preset's flags, read from the files when shown."""

    def get_help_record(self, ctx):
        from kerasgen.presets import as_flags, load_preset, preset_names

        self.help = (
            PRESET_HELP
            + " "
            + "; ".join(f"{name}: {as_flags(load_preset(name))}" for name in preset_names())
            + "."
        )
        return super().get_help_record(ctx)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", default=None, type=PresetName(), cls=PresetOption, help=PRESET_HELP)
@option(
    "--data_dir",
    default="data/tinyshakespeare",
    type=click.Path(file_okay=False),
    help="Folder holding input.txt, or else *.txt files, one document each, joined "
    "in name order with a blank line between (tiny Shakespeare is downloaded if "
    "missing). The id cache goes beside them, or under $KERASGEN_CACHE_DIR "
    "(default ~/.cache/kerasgen) if the folder is read-only.",
)
@option("--encoding", default="utf-8", help="Text encoding of the text files.")
@option(
    "--keep_cr",
    is_flag=True,
    default=False,
    help="Keep carriage returns: without it CRLF and lone CR line ends are read as LF.",
)
@option(
    "--save_dir",
    default="save",
    type=click.Path(file_okay=False),
    help="Run folder for config, vocabulary and checkpoints (with --init_from: that run's "
    "folder unless given).",
)
@option(
    "--log_dir",
    default="logs",
    type=click.Path(file_okay=False),
    help="TensorBoard folder; each run gets its own subfolder.",
)
@option(
    "--save_every",
    default=1000,
    type=click.IntRange(min=0),
    help="Save the latest checkpoint every N steps (and at every epoch end).",
)
@option(
    "--init_from",
    default=None,
    type=click.Path(file_okay=False),
    help="Continue training the run in this folder (weights, optimizer, counters, and "
    "every setting not typed again).",
)
@model_shape_options(
    RNN_FAMILIES + ["bigram", "transformer"],
    "Recurrent cell type; bigram: the next token from the current one only (a "
    "V x V table; the baseline); transformer: a small decoder-only transformer "
    "(causal self-attention, learned positions).",
    transformer=True,
)
@option(
    "--n_head",
    default=4,
    type=POSITIVE,
    help="Attention heads per transformer block (must divide --n_embd).",
)
@option(
    "--dropout",
    default=0.0,
    type=click.FloatRange(0.0, 1.0, max_open=True),
    help="Transformer dropout on attention, residual branches and embeddings.",
)
@option(
    "--level",
    default="char",
    type=click.Choice(list(LEVELS)),
    help="char: one token per character; word: words and punctuation marks with the "
    "space before them, newlines and other whitespace as tokens; bpe: byte-level "
    "BPE subwords learned from the training text (decoding gives the text back "
    "exactly at every level).",
)
@option(
    "--max_vocab",
    default=DEFAULT_MAX_VOCAB,
    type=POSITIVE,
    help="Word level: keep this many most frequent tokens of the training text; the "
    "rest become <unk>.",
)
@option(
    "--vocab_size",
    default=DEFAULT_VOCAB_SIZE,
    type=click.IntRange(BYTES, MAX_VOCAB_SIZE),
    help="Bpe level: tokens in the vocabulary, the 256 single bytes included (fewer "
    "when the training text has no more pairs seen twice).",
)
@option("--num_epochs", default=50, type=POSITIVE, help="Passes over the training text.")
@option(
    "--grad_clip",
    default=5.0,
    type=click.FloatRange(0.0, min_open=True),
    help="Clip the global gradient norm to this value.",
)
@option(
    "--learning_rate",
    default=0.002,
    type=click.FloatRange(0.0, min_open=True),
    help="Adam learning rate of the first epoch.",
)
@option(
    "--decay_rate",
    default=0.97,
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Per-epoch learning-rate decay: lr = learning_rate * decay_rate**epoch "
    "(Adam, not RMSprop).",
)
@keep_prob_options
@option(
    "--time_budget",
    default=None,
    type=Duration(),
    help="Stop after this much wall-clock time (validation included), e.g. 600s, 10m, "
    "1h; then validate, save and report. [default: none]",
)
@option(
    "--lr_schedule",
    default="epoch",
    type=click.Choice(["epoch", "cosine"]),
    help="epoch: multiply by --decay_rate after every epoch (char-rnn). cosine: warm up "
    "over --warmup_steps, then follow a cosine down to 10% of --learning_rate at "
    "the end of --time_budget (or of --num_epochs).",
)
@option(
    "--warmup_steps",
    default=100,
    type=click.IntRange(min=0),
    help="Linear learning-rate warm-up steps of --lr_schedule cosine.",
)
@option(
    "--eval_every",
    default=0,
    type=click.IntRange(min=0),
    help="Also validate every this many steps (the best checkpoint is judged each "
    "time; 0: at epoch ends only).",
)
@option(
    "--eval_chars",
    default=250_000,
    type=click.IntRange(min=0),
    help="Validate on this many characters at the start of the held-out split (a fixed "
    "subset; 0: all of it). kerasgen evaluate scores the whole split.",
)
@option(
    "--val_frac",
    default=0.1,
    type=click.FloatRange(0.0, 1.0, max_open=True),
    help="Hold out the LAST fraction of the text for validation (0: none).",
)
@option(
    "--seed",
    default=None,
    type=click.IntRange(0, MAX_SEED),
    help="Random seed for weights and dropout.",
)
@click.option(
    "--jit_compile/--no_jit_compile",
    "--jit-compile/--no-jit-compile",
    "jit_compile",
    default=False,
    show_default=True,
    help="XLA-compile the training and validation steps.",
)
@click.option(
    "--fused/--no_fused",
    " /--no-fused",
    "fused",
    default=None,
    help="Compute with the fused fast path (same weights and math as the Keras "
    "layers, faster on a CPU); --no_fused calls the Keras layers (cuDNN on a "
    "GPU). [default: fused unless a GPU is visible]",
)
@option(
    "--strategy",
    default="default",
    type=click.Choice(["auto", "default", "mirrored", "multiworker"]),
    help="tf.distribute strategy: auto (mirrored when more than one GPU is visible), "
    "default (one device), mirrored (all local GPUs), multiworker (the cluster in "
    "TF_CONFIG). --batch_size is the global batch.",
)
@option(
    "--mixed_precision",
    is_flag=True,
    default=False,
    help="Compute in float16 with float32 logits and loss (for GPUs; uses the Keras "
    "layers, so cuDNN on a GPU).",
)
@option(
    "--overwrite",
    is_flag=True,
    default=False,
    help="Replace a trained model already in --save_dir instead of refusing.",
)
@click.pass_context
@verbose_option
@library_errors
def train_command(ctx, **options):
    """Train a character-, word- or subword-level model on DATA_DIR/input.txt (or
    DATA_DIR/*.txt) into SAVE_DIR.

    Each setting is, first match wins: the flag typed here, the --preset,
    what the --init_from run recorded (its data, epochs, model shape,
    learning rate...), the default shown. With --init_from the run is
    continued in place unless --save_dir says otherwise.
    """
    import kerasgen
    from kerasgen.model import configure_cpu_threads
    from kerasgen.progress import training_progress

    configure_cpu_threads()
    # Only what was typed: the library fills in the rest (the saved run's
    # settings when continuing one, else the defaults shown in --help).
    typed = {
        name: value
        for name, value in options.items()
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    }
    progress = training_progress(
        live=sys.stdout.isatty(), write=click.echo, notes=lambda line: click.echo(line, err=True)
    )
    kerasgen.train(callbacks=[progress], **typed)


if __name__ == "__main__":
    from kerasgen_cli.native_logs import run_command

    run_command(train_command)
