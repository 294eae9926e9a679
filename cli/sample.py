"""``kerasgen sample`` (also ``python cli/sample.py``): the flags of char-rnn's sample.py."""

from __future__ import annotations

import os

import click
from click.core import ParameterSource

from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option("--save_dir", default="save", type=click.Path(file_okay=False),
         help="Run folder written by kerasgen train.")
@option("-n", "n", default=500, type=click.IntRange(min=0),
         help="Number of characters to generate (tokens, for a word-level model).")
@option("--prime", default="",
         help=r"Text to start from (\n, \t and \\ are decoded; tokenized as in training); "
              "empty: the most frequent character (or token).")
@option("--sample", "sample", default=1, type=click.IntRange(0, 2),
         help="0: argmax at each step; 1: sample at each step; 2: sample only after a space.")
@option("--temperature", default=1.0, type=click.FloatRange(0.0, min_open=True),
         help="Divide the logits by this (< 1: safer, > 1: wilder).")
@option("--top_k", default=0, type=click.IntRange(min=0),
         help="Sample only among the K most likely characters (0: off).")
@option("--top_p", default=1.0, type=click.FloatRange(0.0, 1.0, min_open=True),
         help="Sample only from the smallest set of characters with this total probability.")
@option("--seed", default=None, type=click.IntRange(min=0),
         help="Random seed: the same seed gives the same text.")
@option("--num_samples", default=1, type=click.IntRange(min=1),
         help="Generate this many independent samples together as one batch.")
@option("--checkpoint", default="best", type=click.Choice(["best", "latest"]),
         help="Weights to use: lowest validation loss, or the newest.")
@click.option("--jit_compile/--no_jit_compile", "--jit-compile/--no-jit-compile", "jit_compile",
              default=True, show_default=True,
              help="XLA-compile the sampling loop: about 5x faster, but compiling takes about "
                   "120 MB more peak memory.")
@option("--output", "-o", "output", default=None, type=click.Path(dir_okay=False),
         help="Also write the text to this file (UTF-8).")
@click.pass_context
@library_errors
def sample_command(ctx, save_dir, n, prime, sample, temperature, top_k, top_p, seed,
                   num_samples, checkpoint, jit_compile, output):
    """Generate text from the model in SAVE_DIR."""
    from kerasgen import atomic, rundir
    from kerasgen.model import build_model, configure_cpu_threads
    from kerasgen.sampling import Generator, SamplingOptions, decode_prime

    configure_cpu_threads()
    run = rundir.read_run(save_dir)
    prime = decode_prime(prime)
    unknown = run.vocab.unknown(prime)
    if unknown:
        raise click.BadParameter(
            "characters not in the model's vocabulary: " + ", ".join(repr(c) for c in unknown)
            + "; use only characters seen in training", param_hint="--prime")
    if not run.has_checkpoint(checkpoint):
        if ctx.get_parameter_source("checkpoint") != ParameterSource.DEFAULT:
            raise click.BadParameter(f"{save_dir} has no {checkpoint} checkpoint",
                                     param_hint="--checkpoint")
        checkpoint = "latest"  # trained without validation: there is no "best"
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    model = build_model(run.model_config, num_samples)
    rundir.load_checkpoint(save_dir, checkpoint, model)
    texts = Generator(model, run.vocab, jit_compile=jit_compile).generate(
        n, prime, SamplingOptions(sample=sample, temperature=temperature, top_k=top_k,
                                  top_p=top_p, seed=seed))
    text = "\n\n----\n\n".join(texts) + "\n"
    # Bytes, not str: the text is UTF-8 whatever the terminal's locale says.
    out = click.get_binary_stream("stdout")
    out.write(text.encode("utf-8"))
    out.flush()
    if output is not None:
        atomic.write_text(output, text)


if __name__ == "__main__":
    sample_command()
