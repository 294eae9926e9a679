"""The model one step at a time, as a file other runtimes run: TFLite (LiteRT) and ONNX.

Both files hold the same ``step``: token ids (int32 [batch]) and the state (``state_0`` ..
``state_K``: a recurrent model's per-layer tensors, a transformer's window and its fill, a
bigram's empty one) in, ``logits`` (float32 [batch, vocab]) and the new state out. Ids and
explicit state only: no strings, no ragged tensors, no variables, so the converters take
every family, and the tokenizer stays outside, in the run's ``vocab.json`` beside the model
(which is why every level exports). ``export.json`` says what a runner needs besides: the
state's names, shapes and dtypes, the preamble read before every prime, the family's
context, and where the run came from.

- TFLite: ``model.tflite``, the step at one row (a phone steps one stream, and TFLite's
  kernels want fixed shapes), converted with builtin ops only (no Flex or custom ops).
  Its outputs ``state_*`` carry the inputs' names.
- ONNX: ``model.onnx``, the step at any number of rows, converted by tf2onnx. ONNX names
  every value once, so its outputs are ``new_state_*``.

``quantize``: ``float16`` stores the weights as float16 and ``int8`` as int8 (TFLite's
dynamic range quantization; onnxruntime's dynamic quantization), computing in float32 as
before; ``none`` keeps float32.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np

from kerasgen import __version__
from kerasgen.errors import ParameterError
from kerasgen.model import family

QUANTIZE = ("none", "float16", "int8")
MODEL_FILES = {"tflite": "model.tflite", "onnx": "model.onnx"}  # in an export folder
EXPORT_INFO = "export.json"  # what a runner needs besides the model file and vocab.json
STEP_SIGNATURE = "step"
ONNX_OPSET = 17  # onnxruntime since 1.14 runs it
# What evaluate needs to find the held-out text as the run does (its training settings).
HELD_OUT_SETTINGS = ("data_dir", "val_frac", "encoding", "keep_cr")


def step_functions(steps, batch: int | None = None):
    """The ``initial_state`` and ``step`` functions over a family's step provider.

    ``batch``: a fixed number of rows (None: any). ``initial_state(batch)``: the state of
    ``batch`` rows that have read nothing, as ``state_0`` .. ``state_K`` (the provider's
    state, flattened). ``step(ids, state_0 .. state_K)``: ids read now (int32 [batch]) and
    the state in, ``logits`` (float32 [batch, vocab]) and the new ``state_*`` out.
    """
    import tensorflow as tf

    example = steps.zeros(1)
    specs = [
        tf.TensorSpec([batch, *t.shape[1:]], t.dtype, name=f"state_{i}")
        for i, t in enumerate(tf.nest.flatten(example))
    ]

    def named(state) -> dict:
        return {f"state_{i}": t for i, t in enumerate(tf.nest.flatten(state))}

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="batch")])
    def initial_state(batch):
        return named(steps.zeros(batch))

    @tf.function(input_signature=[tf.TensorSpec([batch], tf.int32, name="ids"), *specs])
    def step(ids, *state):
        logits, state = steps.step(
            ids, tf.nest.pack_sequence_as(example, list(state)), steps.prepare()
        )
        return {"logits": logits, **named(state)}

    return initial_state, step


def check_onnx() -> None:
    """Raise ParameterError unless the ONNX converter and runtime are installed."""
    import importlib.util

    missing = [n for n in ("tf2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(n) is None]
    if missing:
        raise ParameterError(
            "format",
            f"onnx needs {', '.join(missing)}: pip install 'kerasgen[onnx]' "
            "(pip install -e '.[onnx]' in a checkout)",
        )


def write_edge(model, folder: str, format: str, quantize: str = "none") -> None:
    """The step of ``model`` (a ``TrainedModel``) as ``format`` (``tflite`` or ``onnx``)
    into the new folder ``folder``: the model file, ``vocab.json`` and ``export.json``
    (``kerasgen.export.export`` checks the arguments)."""
    import tensorflow as tf

    from kerasgen.families import step_provider
    from kerasgen.rundir import VOCAB_NAME

    net = model.build(1 if family(model.config.model).recurrent else None)
    steps = step_provider(net, fused=True)
    rows = 1 if format == "tflite" else None
    initial_state, step = step_functions(steps, batch=rows)
    os.makedirs(folder)
    path = os.path.join(folder, MODEL_FILES[format])
    if format == "tflite":
        _write_tflite(net, step, path, quantize)
    else:
        _write_onnx(step, path, quantize)
    state = initial_state(tf.constant(1))
    info = {
        "format": format,
        "model": MODEL_FILES[format],
        "quantize": quantize,
        "rows": rows,  # the step's batch: 1, or null for any
        "family": model.config.model,
        "level": model.vocab.level,
        "preamble": model.run.preamble,
        # Windowed families see at most this many tokens (evaluate reads windows of it).
        "context": model.config.context if family(model.config.model).windowed else None,
        "state": [
            {
                "name": name,
                "output": name if format == "tflite" else "new_" + name,
                "shape": [rows, *t.shape[1:]],
                "dtype": t.dtype.name,
            }
            for name, t in state.items()
        ],
        "run": {
            "save_dir": model.save_dir,
            "checkpoint": model.checkpoint,
            "step": model.state.get("step"),
            "model": model.config.to_dict(),
            "train": {k: model.run.train_config.get(k) for k in HELD_OUT_SETTINGS},
        },
        "kerasgen_version": __version__,
    }
    with open(os.path.join(folder, VOCAB_NAME), "w", encoding="utf-8") as f:
        f.write(model.vocab.to_json())
    with open(os.path.join(folder, EXPORT_INFO), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)


def _write_tflite(net, step, path: str, quantize: str) -> None:
    """``step`` converted with TFLite's builtin ops only."""
    import tensorflow as tf

    module = tf.Module()
    # The weights' TensorFlow variables, for the converter to freeze into the flatbuffer
    # (a tracked Keras 3 model leaves it unfrozen variable reads, and NaN logits).
    module.weights, module.step = [getattr(v, "value", v) for v in net.variables], step
    staged = path + ".savedmodel"  # the converter names signatures after a SavedModel's
    try:
        tf.saved_model.save(
            module, staged, signatures={STEP_SIGNATURE: step.get_concrete_function()}
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(
            staged, signature_keys=[STEP_SIGNATURE]
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)


def _write_onnx(step, path: str, quantize: str) -> None:
    """``step`` through tf2onnx, outputs renamed ``new_state_*``."""
    import onnx  # check_onnx() has checked they are installed
    import tensorflow as tf
    import tf2onnx

    signature = step.get_concrete_function().structured_input_signature[0]

    @tf.function(input_signature=signature)
    def renamed(ids, *state):
        out = step(ids, *state)
        return {k if k == "logits" else "new_" + k: v for k, v in out.items()}

    # tf2onnx reports every graph rewrite it tries, and onnxruntime's quantizer advises
    # on the root logger: warnings for a converter's authors, not for a user.
    quiet = [logging.getLogger(n) for n in ("tf2onnx", "onnxruntime", "")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        proto, _ = tf2onnx.convert.from_function(
            renamed,
            input_signature=signature,
            opset=ONNX_OPSET,
            custom_op_handlers={"Erfc": (_erfc, [])},
        )
        if quantize == "float16":
            _float16_weights(proto)
        onnx.save(proto, path)
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            plain = path + ".float32"
            os.replace(path, plain)
            try:
                quantize_dynamic(plain, path, weight_type=QuantType.QInt8)
            finally:
                os.remove(plain)
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


def _erfc(ctx, node, name, args):
    """tf2onnx's handler for TensorFlow's Erfc (the exact GELU), which ONNX lacks:
    1 - Erf(x)."""
    node.type = "Erf"
    one = ctx.make_const(node.name + "/one", np.array(1, np.float32))
    ctx.insert_new_node_on_output(
        "Sub", node.output[0], name=node.name + "/one_minus", inputs=[one.output[0], node.output[0]]
    )
    return node


def _float16_weights(proto) -> None:
    """Store the float32 weights of the ONNX graph ``proto`` as float16, each cast back
    to float32 where it is read (the computation stays float32)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < 2:
            continue  # scalars stay as they are
        half = numpy_helper.from_array(
            numpy_helper.to_array(init).astype(np.float16), init.name + "/float16"
        )
        graph.initializer.remove(init)
        graph.initializer.append(half)
        cast = helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT)
        graph.node.insert(0, cast)
