"""``kerasgen export``: a TensorFlow SavedModel that generates text in its own graph.

The ``serving_default`` signature takes

    prime        string, shape [batch]   the text each sample starts with
    n            int32 scalar            tokens (characters) to generate
    temperature  float32 scalar          divides the logits (> 0)
    seed         int64 scalar            the same seed gives the same text

and returns ``text`` (string, shape [batch]): each prime followed by its
generated text, exactly what ``kerasgen sample --prime P --seed S`` prints for
the same run (row r of a batch draws as sample r of ``--num_samples``). The
whole loop runs in the graph (``Sampler.graph_generate``): the run's preamble,
the prime read from its UTF-8 bytes through the vocabulary, the draws, the
decoding. Nothing of kerasgen is needed to load it (``tf.saved_model.load``),
so TensorFlow Serving can serve it.

Character level only: a word-level tokenizer is a regular expression over
Unicode classes that TensorFlow's string ops cannot express exactly, so such
runs are refused.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from kerasgen.errors import StorageError


def export(save_dir: str, out: str, checkpoint: str = "best") -> str:
    """Write the SavedModel of the run in ``save_dir`` to the folder ``out``; return ``out``.

    ``out`` must not exist yet (or be an empty folder), so nothing is overwritten.
    """
    import tensorflow as tf

    from kerasgen.run import load
    from kerasgen.sampling import Sampler, prefix_ids

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"{out} already exists; export into a new folder (--out)")
    try:  # before the model is built: the folder the export goes into
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    except OSError as e:
        raise _unwritable(out, e) from None
    model = load(save_dir, checkpoint, jit_compile=False)
    vocab = model.vocab
    if vocab.level != "char":
        raise ValueError(
            f"{save_dir} is a {vocab.level}-level run; kerasgen export supports "
            "character-level runs (a word-level tokenizer does not fit in the graph)"
        )
    recurrent = model.config.model in ("lstm", "gru", "rnn")
    # Recurrent models run the fused math on the weights, at any batch; the
    # others are Keras models built for any batch.
    net = model.build(1 if recurrent else None)
    sampler = Sampler(net, vocab, model.run.preamble, jit_compile=False, fused=True)
    codes = np.array([ord(c) for c in vocab.chars], np.int32)
    order = np.argsort(codes)
    preamble = (
        prefix_ids(vocab, model.run.preamble, "") if model.run.preamble else np.zeros(0, np.int32)
    )

    class Generator(tf.Module):
        def __init__(self):
            super().__init__()
            self.net = net  # tracks the weights
            self.sorted_codes = tf.constant(codes[order])  # (V,) code points, ascending
            self.ids_of_sorted = tf.constant(order.astype(np.int32))  # their ids
            self.codes = tf.constant(codes)  # id -> code point
            self.preamble = tf.constant(preamble.astype(np.int32))

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
            # The prefix: preamble then prime; an empty one reads the most
            # frequent character (id 0, the padding), as prefix_ids does.
            prefix = tf.concat(
                [
                    tf.RaggedTensor.from_tensor(
                        tf.tile(self.preamble[None], [tf.shape(prime)[0], 1])
                    ),
                    ids,
                ],
                axis=1,
            )
            lengths = tf.maximum(tf.cast(prefix.row_lengths(), tf.int32), 1)
            prefix = tf.pad(prefix.to_tensor(), [[0, 0], [0, 1]])  # (N, longest + 1)
            generated = sampler.graph_generate(prefix, lengths, n, seed, temperature)
            text = tf.strings.unicode_encode(tf.gather(self.codes, generated), "UTF-8")
            return {"text": prime + text}

    module = Generator()
    tmp = out.rstrip("/") + ".partial"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tf.saved_model.save(
            module, tmp, signatures={"serving_default": module.generate.get_concrete_function()}
        )
        if os.path.isdir(out):
            os.rmdir(out)  # empty, checked above
        os.replace(tmp, out)
    except (OSError, tf.errors.OpError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _unwritable(out, e) from None
    return out


def _unwritable(out: str, error) -> StorageError:
    if isinstance(error, FileExistsError):  # makedirs met a file where a folder belongs
        reason = f"{error.filename} is a file, not a folder"
    else:
        reason = error.strerror if isinstance(error, OSError) else error.message.splitlines()[0]
    return StorageError(
        f"could not write {out} ({reason}); pass an --out in a folder you can write"
    )
