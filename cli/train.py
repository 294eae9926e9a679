"""``kerasgen train`` (also ``python cli/train.py``): the flags of char-rnn's train.py."""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from kerasgen.vocab import BYTES, DEFAULT_MAX_VOCAB, DEFAULT_VOCAB_SIZE, LEVELS
from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import (POSITIVE, RNN_FAMILIES, Duration, model_shape_options,
                                  option)

# ModelConfig fields: with --init_from, any of these not given on the command
# line is taken from the saved run instead of the default.
MODEL_FLAGS = ("model", "rnn_size", "num_layers", "input_keep_prob", "output_keep_prob",
               "n_head", "dropout")
KEEP_PROB = click.FloatRange(0.0, 1.0, min_open=True)
# Vocabulary sizes, each with the one level it applies to.
VOCAB_FLAGS = {"max_vocab": "word", "vocab_size": "bpe"}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option("--data_dir", default="data/tinyshakespeare", type=click.Path(file_okay=False),
         help="Folder holding input.txt (tiny Shakespeare is downloaded if missing).")
@option("--encoding", default="utf-8", help="Text encoding of input.txt.")
@option("--save_dir", default="save", type=click.Path(file_okay=False),
         help="Run folder for config, vocabulary and checkpoints.")
@option("--log_dir", default="logs", type=click.Path(file_okay=False),
         help="TensorBoard folder; each run gets its own subfolder.")
@option("--save_every", default=1000, type=click.IntRange(min=0),
         help="Save the latest checkpoint every N steps (and at every epoch end).")
@option("--init_from", default=None, type=click.Path(file_okay=False),
         help="Continue training the run in this folder (weights, optimizer, counters).")
@model_shape_options(RNN_FAMILIES + ["bigram", "transformer"],
                     "Recurrent cell type; bigram: the next token from the current one only (a "
                     "V x V table; the baseline); transformer: a small decoder-only transformer "
                     "(causal self-attention, learned positions).", transformer=True)
@option("--n_head", default=4, type=POSITIVE,
        help="Attention heads per transformer block (must divide --n_embd).")
@option("--dropout", default=0.0, type=click.FloatRange(0.0, 1.0, max_open=True),
        help="Transformer dropout on attention, residual branches and embeddings.")
@option("--level", default="char", type=click.Choice(list(LEVELS)),
        help="char: one token per character; word: words and punctuation marks with the "
             "space before them, newlines and other whitespace as tokens; bpe: byte-level "
             "BPE subwords learned from the training text (decoding gives the text back "
             "exactly at every level).")
@option("--max_vocab", default=DEFAULT_MAX_VOCAB, type=POSITIVE,
        help="Word level: keep this many most frequent tokens of the training text; the "
             "rest become <unk>.")
@option("--vocab_size", default=DEFAULT_VOCAB_SIZE, type=click.IntRange(min=BYTES),
        help="Bpe level: tokens in the vocabulary, the 256 single bytes included (fewer "
             "when the training text has no more pairs seen twice).")
@option("--num_epochs", default=50, type=POSITIVE, help="Passes over the training text.")
@option("--grad_clip", default=5.0, type=click.FloatRange(0.0, min_open=True),
         help="Clip the global gradient norm to this value.")
@option("--learning_rate", default=0.002, type=click.FloatRange(0.0, min_open=True),
         help="Adam learning rate of the first epoch.")
@option("--decay_rate", default=0.97, type=click.FloatRange(0.0, 1.0, min_open=True),
         help="Per-epoch learning-rate decay: lr = learning_rate * decay_rate**epoch "
              "(Adam, not RMSprop).")
@option("--output_keep_prob", default=1.0, type=KEEP_PROB,
         help="Keep probability of dropout on each recurrent layer's output.")
@option("--input_keep_prob", default=1.0, type=KEEP_PROB,
         help="Keep probability of dropout on each recurrent layer's input.")
@option("--time_budget", default=None, type=Duration(),
         help="Stop after this much wall-clock time (validation included), e.g. 600s, 10m, "
              "1h; then validate, save and report. [default: none]")
@option("--lr_schedule", default="epoch", type=click.Choice(["epoch", "cosine"]),
         help="epoch: multiply by --decay_rate after every epoch (char-rnn). cosine: warm up "
              "over --warmup_steps, then follow a cosine down to 10%% of --learning_rate at "
              "the end of --time_budget (or of --num_epochs).")
@option("--warmup_steps", default=100, type=click.IntRange(min=0),
         help="Linear learning-rate warm-up steps of --lr_schedule cosine.")
@option("--val_frac", default=0.1, type=click.FloatRange(0.0, 1.0, max_open=True),
         help="Hold out the LAST fraction of the text for validation (0: none).")
@option("--seed", default=None, type=int, help="Random seed for weights and dropout.")
@click.option("--jit_compile/--no_jit_compile", "--jit-compile/--no-jit-compile", "jit_compile",
              default=False, show_default=True,
              help="XLA-compile the training and validation steps.")
@click.option("--fused/--no_fused", " /--no-fused", "fused", default=None,
              help="Compute with the fused fast path (same weights and math as the Keras "
                   "layers, faster on a CPU); --no_fused calls the Keras layers (cuDNN on a "
                   "GPU). [default: fused unless a GPU is visible]")
@option("--strategy", default="default",
         type=click.Choice(["auto", "default", "mirrored", "multiworker"]),
         help="tf.distribute strategy: auto (mirrored when more than one GPU is visible), "
              "default (one device), mirrored (all local GPUs), multiworker (the cluster in "
              "TF_CONFIG). --batch_size is the global batch.")
@option("--mixed_precision", is_flag=True, default=False,
         help="Compute in float16 with float32 logits and loss (for GPUs; uses the Keras "
              "layers, so cuDNN on a GPU).")
@option("--overwrite", is_flag=True, default=False,
         help="Replace a trained model already in --save_dir instead of refusing.")
@click.pass_context
@library_errors
def train_command(ctx, init_from, overwrite, **options):
    """Train a character-, word- or subword-level model on DATA_DIR/input.txt into SAVE_DIR."""
    from kerasgen.model import configure_cpu_threads
    from kerasgen.train import TrainConfig, train

    configure_cpu_threads()
    model_options = {name: options.pop(name) for name in MODEL_FLAGS}
    if init_from is not None:
        # Take the saved architecture for every model flag not typed explicitly.
        from kerasgen import rundir

        saved_run = rundir.read_run(init_from)
        saved = saved_run.model_config.to_dict()
        for name in MODEL_FLAGS:
            if ctx.get_parameter_source(name) == ParameterSource.DEFAULT:
                model_options[name] = saved[name]
        # A transformer's context is its --seq_length; the level is its vocabulary's.
        if saved["model"] == "transformer" and \
                ctx.get_parameter_source("seq_length") == ParameterSource.DEFAULT:
            options["seq_length"] = saved["context"]
        if ctx.get_parameter_source("level") == ParameterSource.DEFAULT:
            options["level"] = saved_run.vocab.level
        # The run keeps its vocabulary: its sizes are recorded as they were, and
        # a typed size that contradicts them is refused below.
        for name, level in VOCAB_FLAGS.items():
            saved_size = saved_run.train_config.get(name)
            if level != saved_run.vocab.level or saved_size is None:
                continue
            if ctx.get_parameter_source(name) == ParameterSource.DEFAULT:
                options[name] = saved_size
            elif options[name] != saved_size:
                raise click.BadParameter(
                    f"--init_from {init_from} keeps its vocabulary (--{name} {saved_size}); "
                    "drop the flag or train into a new --save_dir", param_hint=f"--{name}")
    typed = {name for name in ("n_head", *VOCAB_FLAGS)
             if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    if "n_head" in typed and model_options["model"] != "transformer":
        raise click.BadParameter("applies to --model transformer only", param_hint="--n_head")
    for name, level in VOCAB_FLAGS.items():
        if name in typed and options["level"] != level:
            raise click.BadParameter(f"applies to --level {level} only", param_hint=f"--{name}")
    config = TrainConfig(**options)
    result = train(config, model_options, init_from=init_from, overwrite=overwrite,
                   callbacks=[_progress_callback(sys.stdout.isatty())])
    best = "" if result.best_val_loss is None else f", best val loss {result.best_val_loss:.4f}"
    budget = " (time budget spent)" if result.stopped_by_budget else ""
    click.echo(f"done{budget}: {result.steps} steps in {result.seconds:.0f}s, "
               f"{result.chars_per_s:,.0f} chars/s{best}; model saved in {result.save_dir}",
               err=True)


def _progress_callback(live: bool):
    """A Keras callback that shows progress: a live bar on a terminal, else a line per epoch."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            # Keras turns numbers in logs into floats; counts are shown as ints.
            self.total, self.num_epochs = int(logs["total_steps"]), int(logs["num_epochs"])
            click.echo(f"model: {int(logs['params']):,} parameters; {int(logs['steps_per_epoch'])} steps "
                       f"per epoch; TensorBoard logs in {logs['log_dir']}", err=True)
            self.bar = None
            if live:
                self.bar = keras.utils.Progbar(self.total, unit_name="step",
                                               stateful_metrics=["epoch", "loss", "chars/s"])
                self.bar.update(int(logs["step"]))

        def on_train_batch_end(self, step, logs=None):
            if self.bar is not None:
                self.bar.update(step, [("epoch", logs["epoch"]), ("loss", logs["loss"]),
                                       ("chars/s", logs["chars_per_s"])])

        def on_epoch_end(self, epoch, logs=None):
            val = "" if logs["val_loss"] is None else f"  val_loss {logs['val_loss']:.4f}"
            best = " (best)" if logs["best"] else ""
            partial = int(logs["partial_steps"])  # steps of an epoch cut short by the budget
            shown = f"{epoch} + {partial} steps" if partial else f"{epoch}"
            line = (f"epoch {shown}/{self.num_epochs}  step {int(logs['step'])}/{self.total}  "
                    f"train_loss {logs['loss']:.4f}{val}{best}  "
                    f"chars/s {logs['chars_per_s']:,.0f}  {logs['seconds']:.1f}s "
                    f"+ {logs['boundary_seconds']:.1f}s between epochs "
                    f"({logs['val_seconds']:.1f}s validation)")
            click.echo(("\n" if self.bar is not None else "") + line)

    return Progress()


if __name__ == "__main__":
    train_command()
