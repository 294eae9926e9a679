"""``kerasgen export``: a TensorFlow SavedModel that generates text, for TensorFlow Serving;
or the model's step as a TFLite or ONNX file, for phones and other runtimes."""

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
    help="Folder to write the export to (must not exist yet).",
)
@checkpoint_option("export")
@option(
    "--format",
    default=kerasgen.FORMATS[0],
    type=click.Choice(list(kerasgen.FORMATS)),
    help="savedmodel: a SavedModel that generates text in its graph (character level). "
    "tflite: OUT/model.tflite with a step signature at one row (ids and state in, logits "
    "and state out; builtin ops only), the run's vocab.json and export.json beside it, "
    "any level. onnx: the same step as OUT/model.onnx, any number of rows (needs "
    "pip install 'kerasgen[onnx]').",
)
@option(
    "--quantize",
    default=kerasgen.QUANTIZE[0],
    type=click.Choice(list(kerasgen.QUANTIZE)),
    help="With --format tflite or onnx: store the weights as float16 or int8 (smaller; "
    "kerasgen evaluate --exported OUT shows what it costs).",
)
@verbose_option
@library_errors
def export_command(save_dir, out, checkpoint, format, quantize):
    """Export the model in SAVE_DIR: a SavedModel that generates text in its graph, or
    its step as a TFLite or ONNX file (--format).

    The SavedModel's serving_default signature takes prime (string, [batch]), n (int32),
    temperature (float32) and seed (int64) and returns text (string, [batch]):
    each prime followed by what kerasgen sample generates for it with that seed.
    Load it with tf.saved_model.load (kerasgen is not needed) or serve it with
    TensorFlow Serving. Its initial_state(batch) and step(ids, state_*) signatures
    run the model one token at a time, ids and state in, logits and state out.
    A SavedModel holds character-level runs only.

    With --format tflite or onnx, only the step is exported, for a runtime that
    drives its own loop (a phone, onnxruntime); the tokenizer stays in vocab.json
    beside it, so every level exports. kerasgen sample --exported OUT and kerasgen
    evaluate --exported OUT run it, to check it before shipping.
    """
    kerasgen.configure_cpu_threads()
    kerasgen.export(save_dir, out, checkpoint, format=format, quantize=quantize)
    if format != "savedmodel":
        rows, state = ("1", "state_*") if format == "tflite" else ("batch", "new_state_*")
        weights = "" if quantize == "none" else f" ({quantize} weights)"
        click.echo(
            f"wrote {out}: model.{format}{weights} step(ids: int32 [{rows}], state_*) -> "
            f"logits, {state}; vocab.json; export.json (kerasgen sample --exported and "
            "kerasgen evaluate --exported run it)",
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
