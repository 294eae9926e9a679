"""``kerasgen export``: a TensorFlow SavedModel that generates text, for TensorFlow Serving."""

from __future__ import annotations

import click

import kerasgen
from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import checkpoint_option, option, run_folder_option, verbose_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@run_folder_option
@option(
    "--out",
    required=True,
    type=click.Path(),
    help="Folder to write the SavedModel to (must not exist yet).",
)
@checkpoint_option("export")
@option(
    "--format",
    "format_",
    default=kerasgen.FORMATS[0],
    type=click.Choice(list(kerasgen.FORMATS)),
    help="savedmodel: a SavedModel that generates text in its graph (character level). "
    "tflite: OUT/model.tflite with a step signature (ids and state in, logits and state "
    "out; builtin ops only), the run's vocab.json and export.json beside it, any level.",
)
@verbose_option
@library_errors
def export_command(save_dir, out, checkpoint, format_):
    """Export the model in SAVE_DIR as a SavedModel that generates text in its graph.

    Its serving_default signature takes prime (string, [batch]), n (int32),
    temperature (float32) and seed (int64) and returns text (string, [batch]):
    each prime followed by what kerasgen sample generates for it with that seed.
    Load it with tf.saved_model.load (kerasgen is not needed) or serve it with
    TensorFlow Serving. Its initial_state(batch) and step(ids, state_*) signatures
    run the model one token at a time, ids and state in, logits and state out.
    Character-level runs only.
    """
    kerasgen.configure_cpu_threads()
    kerasgen.export(save_dir, out, checkpoint, format=format_)
    if format_ == "tflite":
        click.echo(
            f"wrote {out}: model.tflite step(ids: int32 [1], state_*) -> logits, "
            "state_*; vocab.json; export.json (kerasgen sample --exported runs it)",
            err=True,
        )
        return
    click.echo(
        f"wrote {out}: serving_default(prime: string [batch], n: int32, temperature: "
        "float32, seed: int64) -> text: string [batch]; initial_state(batch) -> state_*; "
        "step(ids: int32 [batch], state_*) -> logits, state_*",
        err=True,
    )


if __name__ == "__main__":
    from kerasgen_cli.native_logs import run_command

    run_command(export_command)
