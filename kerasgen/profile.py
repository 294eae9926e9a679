"""``kerasgen bench --profile``: where one training step's time goes, and this CPU's GEMM peak.

The training step (``steps.compile_steps``, fused path) is timed whole and in parts, each
part compiled on its own and timed as the median of repeated calls:

- ``input``: the next batch from the ``tf.data`` stream pipeline;
- ``forward``: the logits and the loss (recurrence and output layer), no gradient;
- ``forward_backward``: the same with the gradients of every weight;
- ``optimizer``: clipping by global norm and Adam's update, given gradients;
- ``output_forward`` / ``output_forward_backward``: the output layer alone (logits of every
  time step, softmax cross-entropy), on hidden states of the same shape;
- ``weight_grads``: the recurrent layers' weight-gradient products as the step computes
  them (``kerasgen.backward``: one GEMM per layer over all time steps of the batch, in the
  step's precision; for GRU, autodiff's);
- ``weight_grads_per_step``: the same as autodiff of the unrolled loop computes them, one
  small product per layer and time step, summed;
- ``weight_grads_one_gemm`` (float32) and ``weight_grads_one_gemm_bf16``: one product per
  layer in each precision.

The rest is by difference: the backward pass is ``forward_backward - forward``, and the
recurrence (forward and backward through time) is what the output layer and the weight
gradients leave of them. ``gemm_peak`` measures a square float32 (or bfloat16) product, the
most this CPU does with TensorFlow's kernels, to show how close training runs to it.
"""

from __future__ import annotations

import time

import numpy as np

REPEATS = 9  # timed calls per part; the median is reported
GEMM_SIZE = 2048  # the square product gemm_peak times


def _median_seconds(call, repeats: int = REPEATS) -> float:
    """Median seconds of ``call()`` (which must return something to wait on) after one
    warm-up call."""
    np.asarray(call())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.asarray(call())
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def gemm_peak(dtype: str = "float32", size: int = GEMM_SIZE) -> float:
    """GFLOP/s of (size x size) @ (size x size) products in ``dtype``, measured now: two
    independent ones at once, so that the cores share the work also where each op runs on
    one thread (``model.configure_cpu_threads``)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (tf.cast(rng.standard_normal((size, size), np.float32), dtype) for _ in range(2))

    @tf.function
    def products(a, b):
        return [tf.matmul(a, b)[:1, :1], tf.matmul(b, a)[:1, :1]]

    return 2 * 2 * size**3 / _median_seconds(lambda: products(a, b)[0], 5) / 1e9


def profile_training(
    model, optimizer, batches, line_start_id: int = 0, precision: str = "float32"
) -> dict:
    """Milliseconds per training step of each part (see the module docstring) for the
    Keras ``model`` (built at the batch size), its ``optimizer``, an iterator of (x, y)
    batches and the step's ``precision``."""
    import tensorflow as tf

    from kerasgen import backward
    from kerasgen.fused import FusedModel
    from kerasgen.model import family_of
    from kerasgen.steps import compile_steps

    net = FusedModel(model)
    weights = model.trainable_variables
    train_step, _ = compile_steps(
        model, optimizer, fused=True, line_start_id=line_start_id, precision=precision
    )
    x, y = next(batches)
    seq, batch = x.shape[1], x.shape[0]
    units = net.dense_kernel.shape[0]

    def loss_of(logits, targets):  # logits (T, B, V), targets (T, B)
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        )

    def loss_and_record(x, y, tape):  # the step's forward, in its precision
        record = backward.Products.for_step(net, tape, precision)
        logits, _ = net.forward(tf.transpose(x), net.read_states(), True, record=record)
        return loss_of(logits, tf.transpose(y)), record

    @tf.function
    def forward(x, y):
        with tf.GradientTape() as tape:
            return loss_and_record(x, y, tape)[0]

    @tf.function
    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            loss, record = loss_and_record(x, y, tape)
        return backward.gradients(tape, loss, weights, record)

    gradients = forward_backward(x, y)

    @tf.function
    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, weights))
        return optimizer.iterations

    hidden = tf.random.normal([seq, batch, units])
    targets = tf.transpose(y)

    @tf.function
    def output_forward(hidden):
        return loss_of(tf.einsum("tbh,hv->tbv", hidden, net.dense_kernel) + net.dense_bias, targets)

    @tf.function
    def output_forward_backward(hidden):
        with tf.GradientTape() as tape:
            tape.watch(hidden)
            loss = output_forward(hidden)
        return tape.gradient(loss, [hidden, net.dense_kernel, net.dense_bias])

    parts = {
        "input": _median_seconds(lambda: next(batches)[0]),
        "step": _median_seconds(lambda: train_step(*next(batches))),
        "forward": _median_seconds(lambda: forward(x, y)),
        "forward_backward": _median_seconds(lambda: forward_backward(x, y)[0]),
        "optimizer": _median_seconds(lambda: apply(gradients)),
        "output_forward": _median_seconds(lambda: output_forward(hidden)),
        "output_forward_backward": _median_seconds(lambda: output_forward_backward(hidden)[1]),
        **_weight_gradient_parts(net, family_of(model).gates, seq, batch),
    }
    # The step's own: one GEMM per layer in its precision, or (GRU) autodiff's products.
    step_gemm = "_bf16" if precision == "bfloat16" else ""
    gemm = "per_step" if family_of(model).split_recurrent else f"one_gemm{step_gemm}"
    parts["weight_grads"] = parts[f"weight_grads_{gemm}"]
    return {name: round(seconds * 1e3, 3) for name, seconds in parts.items()}


def _weight_gradient_parts(net, gates: int, seq: int, batch: int) -> dict:
    """Seconds of the recurrent layers' weight-gradient products: one per layer and time
    step, summed (as autodiff of the unrolled loop computes them), and one per layer over
    the whole batch in float32 and bfloat16."""
    import tensorflow as tf

    units = net.dense_kernel.shape[0]
    gates = gates * units
    # Per layer: inputs (B, K) and gate gradients (B, G*H) of every time step; layer 1 reads
    # h (K = H), the layers above [x, h] (K = 2H).
    widths = [units] + [2 * units] * (len(net.layers) - 1)
    inputs = [tf.random.normal([seq, batch, k]) for k in widths]
    deltas = tf.random.normal([seq, batch, gates])

    @tf.function
    def weight_grads_per_step(inputs, deltas):
        return [
            tf.add_n([tf.matmul(a[t], deltas[t], transpose_a=True) for t in range(seq)])
            for a in inputs
        ]

    def one_gemm(dtype):
        flat = [tf.cast(tf.reshape(a, [-1, a.shape[2]]), dtype) for a in inputs]
        d = tf.cast(tf.reshape(deltas, [-1, gates]), dtype)

        @tf.function
        def products(flat, d):
            return [tf.matmul(a, d, transpose_a=True)[:1, :1] for a in flat]

        return _median_seconds(lambda: products(flat, d)[0])

    return {
        "weight_grads_per_step": _median_seconds(lambda: weight_grads_per_step(inputs, deltas)[0]),
        "weight_grads_one_gemm": one_gemm(tf.float32),
        "weight_grads_one_gemm_bf16": one_gemm(tf.bfloat16),
    }


def profile_rows(parts: dict) -> list[tuple[str, float]]:
    """The profile as (part, ms per step) rows, the parts by difference included: forward
    and backward each split into output layer and recurrence, the backward's weight
    gradients apart."""
    backward = parts["forward_backward"] - parts["forward"]
    output_backward = parts["output_forward_backward"] - parts["output_forward"]
    return [
        ("input pipeline", parts["input"]),
        ("forward: recurrence", parts["forward"] - parts["output_forward"]),
        ("forward: output layer", parts["output_forward"]),
        ("backward: recurrence", backward - output_backward - parts["weight_grads"]),
        ("backward: weight gradients", parts["weight_grads"]),
        ("backward: output layer", output_backward),
        ("optimizer (clip, Adam)", parts["optimizer"]),
        ("whole step (its input included)", parts["step"]),
        ("weight gradients per step (autodiff)", parts["weight_grads_per_step"]),
        ("  as one GEMM per layer, float32", parts["weight_grads_one_gemm"]),
        ("  as one GEMM per layer, bfloat16", parts["weight_grads_one_gemm_bf16"]),
    ]
