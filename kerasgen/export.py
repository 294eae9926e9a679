"""``kerasgen export``: a TensorFlow SavedModel that generates text in its own graph.

The ``serving_default`` signature takes

    prime        string, shape [batch]   the text each sample starts with
    n            int32 scalar            tokens (characters) to generate
    temperature  float32 scalar          divides the logits (> 0)
    seed         int64 scalar            the same seed gives the same text

and returns ``text`` (string, shape [batch]): each prime followed by its
generated text, exactly what ``kerasgen sample --prime P --seed S`` prints for
the same run (row r of a batch draws as sample r of ``--num_samples``). The
whole loop runs in the graph (``graph_generate``, over the family's step
provider, as ``kerasgen.sampler`` runs it): the run's preamble,
the prime read from its UTF-8 bytes through the vocabulary, the draws, the
decoding. Nothing of kerasgen is needed to load it (``tf.saved_model.load``),
so TensorFlow Serving can serve it.

Two more signatures expose the model one step at a time, ids and explicit state
only, for a runtime that drives its own loop: ``initial_state(batch)`` gives the
state of rows that have read nothing as ``state_0`` .. ``state_K`` (a recurrent
model's per-layer tensors, a transformer's window and its fill, a bigram's
empty one), and ``step(ids, state_0 .. state_K)`` reads ids (int32 [batch]) and
returns ``logits`` (float32 [batch, vocab]) and the new ``state_*``: the logits
the Keras model gives at each position.

Character level only: a word-level tokenizer is a regular expression over
Unicode classes that TensorFlow's string ops cannot express exactly, so such
runs are refused. ``format="tflite"`` and ``"onnx"`` write the ``step`` alone, for
other runtimes, at any level (``kerasgen.edge``).
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from kerasgen import checks
from kerasgen.edge import QUANTIZE, check_onnx, step_functions, write_edge
from kerasgen.errors import ParameterError, StorageError
from kerasgen.model import family
from kerasgen.sampling import SamplingOptions, glue_rule, select_next, space_id
from kerasgen.streams import prefix_ids

FORMATS = ("savedmodel", "tflite", "onnx")


def export(
    save_dir: str,
    out: str,
    checkpoint: str = "best",
    format: str = "savedmodel",
    quantize: str = "none",
) -> str:
    """Write the run in ``save_dir`` to the folder ``out`` as ``format``; return ``out``.

    ``savedmodel``: a SavedModel that generates text in its graph (character level).
    ``tflite`` / ``onnx``: ``out/model.tflite`` / ``out/model.onnx`` with the ``step``
    signature, the run's ``vocab.json`` and ``export.json`` beside it, any level
    (``kerasgen.edge``); ``quantize`` (``float16``, ``int8``) stores their weights smaller.
    ``out`` must not exist yet (or be an empty folder), so nothing is overwritten.
    """
    import tensorflow as tf

    from kerasgen.run import load

    checks.one_of("format", format, FORMATS)
    checks.one_of("quantize", quantize, QUANTIZE)
    if format == "savedmodel" and quantize != "none":
        raise ParameterError(
            "quantize", "applies to format='tflite' and format='onnx', not to a SavedModel"
        )
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ParameterError("out", f"{out} already exists; export into a new folder")
    try:  # before the model is built: the folder the export goes into
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    except OSError as e:
        raise _unwritable(out, e) from None
    if format == "onnx":
        check_onnx()  # before the model is built
    model = load(save_dir, checkpoint, jit_compile=False)
    if format == "savedmodel" and model.vocab.level != "char":
        raise ParameterError(
            "save_dir",
            f"{save_dir} is a {model.vocab.level}-level run; a SavedModel export holds "
            "character-level runs (a word-level tokenizer does not fit in the graph); "
            "format='tflite' or 'onnx' exports any level",
        )
    tmp = out.rstrip("/") + ".partial"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        if format == "savedmodel":
            module = _generator(model)
            signatures = {
                "serving_default": module.generate.get_concrete_function(),
                "initial_state": module.initial_state.get_concrete_function(),
                "step": module.step.get_concrete_function(),
            }
            tf.saved_model.save(module, tmp, signatures=signatures)
        else:
            write_edge(model, tmp, format, quantize)
        if os.path.isdir(out):
            os.rmdir(out)  # empty, checked above
        os.replace(tmp, out)
    except (OSError, tf.errors.OpError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _unwritable(out, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _generator(model):
    """The ``tf.Module`` whose ``generate`` is the serving signature."""
    import tensorflow as tf

    from kerasgen.families import step_provider

    vocab = model.vocab
    # Recurrent models run the fused math on the weights, at any batch; the
    # others are Keras models built for any batch.
    net = model.build(1 if family(model.config.model).recurrent else None)
    steps = step_provider(net, fused=True)
    rules = (space_id(vocab), glue_rule(vocab))
    codes = np.array([ord(c) for c in vocab.chars], np.int32)
    order = np.argsort(codes)
    preamble = model.run.preamble
    preamble = prefix_ids(vocab, preamble, "") if preamble else np.zeros(0, np.int32)

    class Generator(tf.Module):
        def __init__(self):
            super().__init__()
            self.net = net  # tracks the weights
            self.sorted_codes = tf.constant(codes[order])  # (V,) code points, ascending
            self.ids_of_sorted = tf.constant(order.astype(np.int32))  # their ids
            self.codes = tf.constant(codes)  # id -> code point
            self.preamble = tf.constant(preamble.astype(np.int32))
            self.initial_state, self.step = step_functions(steps)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="prime"),
                tf.TensorSpec([], tf.int32, name="n"),
                tf.TensorSpec([], tf.float32, name="temperature"),
                tf.TensorSpec([], tf.int64, name="seed"),
            ]
        )
        def generate(self, prime, n, temperature, seed):
            tf.debugging.assert_greater(temperature, 0.0, message="temperature must be > 0")
            tf.debugging.assert_non_negative(n, message="n must be >= 0")
            prefix, lengths = self.prefix(prime)
            generated = graph_generate(steps, prefix, lengths, n, seed, temperature, *rules)
            text = tf.strings.unicode_encode(tf.gather(self.codes, generated), "UTF-8")
            return {"text": prime + text}

        def prefix(self, prime):
            """Each row's preamble and prime as ids, padded: (N, longest + 1), lengths (N,)."""
            points = tf.strings.unicode_decode(prime, "UTF-8")  # ragged (N, ?)
            flat = points.flat_values
            at = tf.minimum(tf.searchsorted(self.sorted_codes, flat), len(codes) - 1)
            known = tf.gather(self.sorted_codes, at) == flat
            tf.debugging.assert_equal(
                tf.reduce_all(known),
                True,
                message="the prime has characters that are not in the model's vocabulary",
            )
            ids = points.with_flat_values(tf.gather(self.ids_of_sorted, at))
            # An empty prefix reads the most frequent character (id 0, the padding), as
            # prefix_ids does.
            rows = tf.RaggedTensor.from_tensor(
                tf.tile(self.preamble[None], [tf.shape(prime)[0], 1])
            )
            prefix = tf.concat([rows, ids], axis=1)
            lengths = tf.maximum(tf.cast(prefix.row_lengths(), tf.int32), 1)
            return tf.pad(prefix.to_tensor(), [[0, 0], [0, 1]]), lengths

    return Generator()


def graph_generate(steps, prefix, lengths, n, seed, temperature, space, glue):
    """The sampler's loop in TensorFlow ops, one prefix per row: ids (N, n) of ``n``
    tokens after each row's prefix.

    ``steps``: the family's step provider; ``prefix`` (N, L) int32, row r's prefix
    left-aligned in its first ``lengths[r]`` >= 1 places; ``n``, ``seed``,
    ``temperature``: scalar tensors. Draws are those of ``Sampler.stream_ids`` for
    the same prefix and seed (generation index g of row r uses the uniform of
    (seed, g, r)).
    """
    import tensorflow as tf

    state, read, ids = steps.graph_start(prefix, lengths)
    prepared = steps.prepare()
    options = SamplingOptions()
    # Row r reads its first read[r] tokens, then draws; the loop runs until the
    # row with the longest prefix has drawn n.
    total = tf.reduce_max(read) - 1 + n
    out = tf.TensorArray(tf.int32, size=total)
    width = tf.shape(prefix)[1]
    for k in tf.range(total):
        logits, state = steps.step(ids, state, prepared)
        drawn = select_next(logits, ids, k + 1 - read, seed, temperature, options, space, glue)
        forced = tf.gather(prefix, tf.minimum(k + 1, width - 1)[None], axis=1)[:, 0]
        ids = tf.where(k + 1 < read, forced, drawn)
        out = out.write(k, ids)
    taken = tf.transpose(out.stack())  # (N, total)
    columns = (read - 1)[:, None] + tf.range(n)[None, :]  # (N, n)
    return tf.gather(taken, columns, batch_dims=1)


def _unwritable(out: str, error) -> StorageError:
    if isinstance(error, FileExistsError):  # makedirs met a file where a folder belongs
        reason = f"{error.filename} is a file, not a folder"
    else:
        reason = error.strerror if isinstance(error, OSError) else error.message.splitlines()[0]
    return StorageError(f"could not write {out} ({reason}); pass an out folder you can write")
