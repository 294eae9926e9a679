"""The fused training step's gradients: each recurrent layer's weight gradients as one GEMM.

Autodiff of the unrolled loop (``kerasgen.fused``) computes a layer's weight gradient as one
small product per time step, ``inputs_t^T @ d pre_t`` with B rows, summed over the steps.
Here the recurrent products' weights enter the forward pass as constants
(``tf.stop_gradient``), the tape is asked instead for the gradient of every step's
pre-activations ``pre_t`` (the backward recurrence through time is unchanged: each
``d pre_t`` still flows back into ``h_{t-1}``), and each layer's weight gradient is one
product over all T*B rows::

    d W = concat_t(inputs_t)^T @ concat_t(d pre_t)      # (K, G*H), K = H (layer 1) or 2H
    d b = sum over rows of concat_t(d pre_t)            # layers 2..N (layer 1's bias is in
                                                        # its lookup table, as autodiff has it)

The same sums in another order: equal to autodiff's to float rounding (tested). That one
large product is what a CPU runs fastest.

``precision`` "bfloat16" computes every product of the recurrence in bfloat16 where the CPU
has bfloat16 instructions: each time step's ``[x_t, h_{t-1}] @ W`` (forward, and through
autodiff its backward ``d pre_t @ W^T``) from bfloat16 copies of its operands, with a
float32 result, and the weight-gradient GEMMs likewise. Weights, optimizer state,
recurrent state, gate arithmetic, the first layer's lookup table, logits and loss stay
float32; sampling and export compute in float32 as before.

This covers the families whose layers 2..N do one stacked product (LSTM, simple RNN); GRU's
reset gate multiplies the recurrent product alone, and its gradients stay autodiff's.

``resolve_precision`` decides what "auto" means on this machine (docs/speed.md has the
measurements it follows).
"""

from __future__ import annotations

PRECISIONS = ("auto", "float32", "bfloat16")
# CPU flags (Linux /proc/cpuinfo names) of instructions that compute bfloat16 products.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class Products:
    """What ``FusedModel.forward`` keeps for ``gradients``: per layer, the recurrent
    product's input rows and its pre-activations (watched by the tape) of every step."""

    def __init__(self, net, tape, dtype):
        self.net, self.tape, self.dtype = net, tape, dtype
        self.inputs = [[] for _ in net.layers]  # per layer: T tensors (B, K)
        self.pre = [[] for _ in net.layers]  # per layer: T tensors (B, G*H)

    @classmethod
    def for_step(cls, net, tape, precision: str):
        """A record for one training step of ``net`` under ``tape``, or None where the
        family's gradients stay autodiff's (GRU)."""
        import tensorflow as tf

        if net.family.split_recurrent:
            return None
        return cls(net, tape, tf.bfloat16 if precision == "bfloat16" else tf.float32)

    def constants(self, weights: list) -> list:
        """``derived_weights`` with the recurrent products' weights as constants, in the
        products' dtype: layer 1's recurrent kernel, the stacked kernels (and the float32
        biases) of layers 2..N."""
        import tensorflow as tf

        def constant(w):  # in the products' dtype: cast once per step, not per time step
            return tf.cast(tf.stop_gradient(w), self.dtype)

        first = (weights[0][0], constant(weights[0][1]), weights[0][2])
        rest = [(constant(w), tf.stop_gradient(b), extra) for w, b, extra in weights[1:]]
        return [first] + rest

    def keep(self, layer: int, inputs, pre):
        """Record one step's product inputs (B, K) and pre-activations (B, G*H); returns
        ``pre``, watched."""
        self.tape.watch(pre)
        self.inputs[layer].append(inputs)
        self.pre[layer].append(pre)
        return pre

    def watched(self) -> list:
        return [pre for layer in self.pre for pre in layer]

    def weight_gradients(self, pre_grads: list) -> dict:
        """id(variable) -> gradient of the recurrent layers' weights, from the gradients of
        ``watched()`` (in its order)."""
        import tensorflow as tf

        grads, start = {}, 0
        for i, layer in enumerate(self.net.layers):
            steps = len(self.pre[i])
            rows = tf.concat(self.inputs[i], axis=0)  # (T*B, K)
            deltas = tf.concat(pre_grads[start : start + steps], axis=0)  # (T*B, G*H)
            start += steps
            product = tf.matmul(
                tf.cast(rows, self.dtype), tf.cast(deltas, self.dtype), transpose_a=True
            )
            product = tf.cast(product, tf.float32)  # (K, G*H)
            cell = layer.cell
            if i == 0:
                grads[id(cell.recurrent_kernel)] = product
                continue
            below = cell.kernel.shape[0]
            grads[id(cell.kernel)] = product[:below]
            grads[id(cell.recurrent_kernel)] = product[below:]
            grads[id(cell.bias)] = tf.reduce_sum(deltas, axis=0)
        return grads


def gradients(tape, target, variables: list, record: Products | None) -> list:
    """The gradients of ``target`` for ``variables`` (after the tape has closed): autodiff's,
    with the recurrent weights' from one GEMM per layer where ``record`` kept the products."""
    if record is None:
        return tape.gradient(target, variables)
    watched = record.watched()
    found = tape.gradient(target, list(variables) + watched)
    grads, pre_grads = found[: len(variables)], found[len(variables) :]
    gemm = record.weight_gradients(pre_grads)
    missing = set(gemm) - {id(v) for v in variables}
    if missing:
        raise ValueError("the recurrent weights are not among the variables being trained")
    return [gemm.get(id(v), g) for v, g in zip(variables, grads)]


def cpu_flags() -> set[str]:
    """This CPU's feature flags, as Linux lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(precision: str, fused: bool, flags: set[str] | None = None) -> str:
    """ "float32" or "bfloat16": what ``precision`` means for a training step. "auto" is
    bfloat16 on a CPU with bfloat16 instructions (AVX512-BF16 or AMX) when the fused path
    computes the step, float32 elsewhere (the Keras layers, GPUs: ``mixed_precision``)."""
    if precision != "auto":
        return precision
    if not fused:
        return "float32"
    flags = cpu_flags() if flags is None else flags
    return "bfloat16" if any(flag in flags for flag in BF16_CPU_FLAGS) else "float32"
