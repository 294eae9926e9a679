"""``kerasgen train`` (also ``python cli/train.py``): the flags of char-rnn's train.py."""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

import kerasgen
from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import (
    MODEL_DEFAULTS,
    TRAIN_DEFAULTS,
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
    """A shipped preset's name (the library checks it); the names come from the package's
    preset files."""

    name = "preset"

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(kerasgen.preset_names()) + "]"

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(n) for n in kerasgen.preset_names() if n.startswith(incomplete)]


class PresetOption(click.Option):
    """``--preset``, whose help lists each preset's flags, read from the files when shown."""

    def get_help_record(self, ctx):
        presets = kerasgen.preset_names()
        flags = (f"{name}: {kerasgen.as_flags(kerasgen.load_preset(name))}" for name in presets)
        self.help = PRESET_HELP + " " + "; ".join(flags) + "."
        return super().get_help_record(ctx)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", default=None, type=PresetName(), cls=PresetOption, help=PRESET_HELP)
@option(
    "--data_dir",
    default=TRAIN_DEFAULTS.data_dir,
    type=click.Path(file_okay=False),
    help="Folder holding input.txt, or else *.txt files, one document each, joined "
    "in name order with a blank line between (tiny Shakespeare is downloaded if "
    "missing). The id cache goes beside them, or under $KERASGEN_CACHE_DIR "
    "(default ~/.cache/kerasgen) if the folder is read-only.",
)
@option("--encoding", default=TRAIN_DEFAULTS.encoding, help="Text encoding of the text files.")
@option(
    "--keep_cr",
    is_flag=True,
    default=TRAIN_DEFAULTS.keep_cr,
    help="Keep carriage returns: without it CRLF and lone CR line ends are read as LF.",
)
@option(
    "--save_dir",
    default=TRAIN_DEFAULTS.save_dir,
    type=click.Path(file_okay=False),
    help="Run folder for config, vocabulary and checkpoints (with --init_from: that run's "
    "folder unless given).",
)
@option(
    "--log_dir",
    default=TRAIN_DEFAULTS.log_dir,
    type=click.Path(file_okay=False),
    help="TensorBoard folder; each run gets its own subfolder.",
)
@option(
    "--save_every",
    default=TRAIN_DEFAULTS.save_every,
    type=int,
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
    list(kerasgen.FAMILIES),
    "Model family: " + "; ".join(f"{n}: {f.help}" for n, f in kerasgen.FAMILIES.items()) + ".",
    transformer=True,
)
@option(
    "--n_head",
    default=MODEL_DEFAULTS.n_head,
    type=int,
    help="Attention heads per transformer block (must divide --n_embd).",
)
@option(
    "--dropout",
    default=MODEL_DEFAULTS.dropout,
    type=float,
    help="Transformer dropout on attention, residual branches and embeddings.",
)
@option(
    "--level",
    default=TRAIN_DEFAULTS.level,
    type=click.Choice(list(kerasgen.LEVELS)),
    help="char: one token per character; word: words and punctuation marks with the "
    "space before them, newlines and other whitespace as tokens; bpe: byte-level "
    "BPE subwords learned from the training text (decoding gives the text back "
    "exactly at every level).",
)
@option(
    "--max_vocab",
    default=TRAIN_DEFAULTS.max_vocab,
    type=int,
    help="Word level: keep this many most frequent tokens of the training text; the "
    "rest become <unk>.",
)
@option(
    "--vocab_size",
    default=TRAIN_DEFAULTS.vocab_size,
    type=int,
    help="Bpe level: tokens in the vocabulary, the 256 single bytes included (fewer "
    "when the training text has no more pairs seen twice).",
)
@option(
    "--num_epochs",
    default=TRAIN_DEFAULTS.num_epochs,
    type=int,
    help="Passes over the training text.",
)
@option(
    "--grad_clip",
    default=TRAIN_DEFAULTS.grad_clip,
    type=float,
    help="Clip the global gradient norm to this value.",
)
@option(
    "--learning_rate",
    default=TRAIN_DEFAULTS.learning_rate,
    type=float,
    help="Adam learning rate of the first epoch.",
)
@option(
    "--decay_rate",
    default=TRAIN_DEFAULTS.decay_rate,
    type=float,
    help="Per-epoch learning-rate decay: lr = learning_rate * decay_rate**epoch "
    "(Adam, not RMSprop).",
)
@keep_prob_options
@option(
    "--time_budget",
    default=None,
    type=str,
    help="Stop after this much wall-clock time (validation included), e.g. 600s, 10m, "
    "1h; then validate, save and report. [default: none]",
)
@option(
    "--lr_schedule",
    default=TRAIN_DEFAULTS.lr_schedule,
    type=click.Choice(list(kerasgen.LR_SCHEDULES)),
    help="epoch: multiply by --decay_rate after every epoch (char-rnn). cosine: warm up "
    "over --warmup_steps, then follow a cosine down to 10% of --learning_rate at "
    "the end of --time_budget (or of --num_epochs).",
)
@option(
    "--warmup_steps",
    default=TRAIN_DEFAULTS.warmup_steps,
    type=int,
    help="Linear learning-rate warm-up steps of --lr_schedule cosine.",
)
@option(
    "--eval_every",
    default=TRAIN_DEFAULTS.eval_every,
    type=int,
    help="Also validate every this many steps (the best checkpoint is judged each "
    "time; 0: at epoch ends only).",
)
@option(
    "--eval_chars",
    default=TRAIN_DEFAULTS.eval_chars,
    type=int,
    help="Validate on this many characters at the start of the held-out split (a fixed "
    "subset; 0: all of it). kerasgen evaluate scores the whole split.",
)
@option(
    "--val_frac",
    default=TRAIN_DEFAULTS.val_frac,
    type=float,
    help="Hold out the LAST fraction of the text for validation (0: none).",
)
@option(
    "--seed",
    default=None,
    type=int,
    help="Random seed for weights and dropout.",
)
@click.option(
    "--jit_compile/--no_jit_compile",
    "--jit-compile/--no-jit-compile",
    "jit_compile",
    default=TRAIN_DEFAULTS.jit_compile,
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
    default=TRAIN_DEFAULTS.strategy,
    type=click.Choice(list(kerasgen.STRATEGIES)),
    help="tf.distribute strategy: auto (mirrored when more than one GPU is visible), "
    "default (one device), mirrored (all local GPUs), multiworker (the cluster in "
    "TF_CONFIG). --batch_size is the global batch.",
)
@option(
    "--precision",
    type=click.Choice(list(kerasgen.PRECISIONS)),
    default=TRAIN_DEFAULTS.precision,
    help="Compute the fused step's recurrent products in float32 or bfloat16 "
    "(weights, optimizer, state and loss stay float32); auto: bfloat16 on a CPU with "
    "bfloat16 instructions (AVX512-BF16, AMX), float32 elsewhere.",
)
@option(
    "--mixed_precision",
    is_flag=True,
    default=TRAIN_DEFAULTS.mixed_precision,
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
    kerasgen.configure_cpu_threads()
    # Only what was typed: the library fills in the rest (the saved run's
    # settings when continuing one, else the defaults shown in --help).
    typed = {
        name: value
        for name, value in options.items()
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    }
    progress = kerasgen.training_progress(
        live=sys.stdout.isatty(), write=click.echo, notes=lambda line: click.echo(line, err=True)
    )
    kerasgen.train(callbacks=[progress], **typed)


if __name__ == "__main__":
    from kerasgen_cli.native_logs import run_command

    run_command(train_command)
