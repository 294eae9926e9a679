"""The fast path: the network of ``model.build_model``, computed from its own variables.

``build_model`` stays the definition of the network: its Keras layers own the
weights, the carried state and the checkpoints. ``FusedModel`` reads those same
variables and runs the same mathematics with fewer, larger operations, which
is what decides speed on a CPU, where a char-RNN step is a long chain of small
matmuls and per-operation overhead. What it does differently:

- Embedding followed by the first layer's input kernel is one lookup table:
  ``table = embedding @ kernel + bias`` (V, G*H) is computed once per call and
  gathered, so the first layer's input projection costs no matmul at all,
  forward or backward.
- The time loop is unrolled (the sequence length is static) and time-major,
  and the layers advance as a wavefront: layer 2 at step t depends only on
  layer 1 at step t, so with two inter-op threads it runs while layer 1
  computes step t + 1, forward and backward.
- For LSTM and SimpleRNN the input and recurrent products of layers 2..N are
  one matmul: ``concat([x_t, h_{t-1}]) @ concat([kernel, recurrent_kernel])``.
- The output projection of all timesteps is one matmul.

How much faster, and what XLA (``jit_compile``) does to it on a CPU (it makes
this graph slower): docs/speed.md.

The results equal the Keras layers' to float rounding (tested to 1e-5):
gate order and activations follow Keras 3 (LSTM gates i, f, c, o with sigmoid
recurrent activation; GRU gates z, r, h with ``reset_after=True``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kerasgen.model import family_of, rnn_layers

if TYPE_CHECKING:
    from kerasgen.backward import Products


class FusedModel:
    """Same weights, same state variables, same logits as the Keras model, faster.

    Calling it updates the Keras layers' carried state, so ``reset_states`` and
    checkpoints work unchanged whichever path ran.
    """

    def __init__(self, model):
        self.embedding = model.get_layer("embedding").embeddings  # (V, H)
        self.layers = rnn_layers(model)
        self.family = family_of(model)
        names = {layer.name: layer for layer in model.layers}
        self.input_drop = getattr(names.get("input_dropout_1"), "rate", 0.0)
        self.output_drop = getattr(names.get("output_dropout_1"), "rate", 0.0)
        dense = model.get_layer("logits")
        self.dense_kernel, self.dense_bias = dense.kernel, dense.bias  # (H, V), (V,)

    # -- weights derived once per call (inside the gradient tape when training) --

    def derived_weights(self, fuse_embedding: bool = True) -> list:
        """Per layer: (input weights, recurrent weights, recurrent bias).

        Layer 1 with ``fuse_embedding``: its input weights are the (V, G*H)
        lookup table. LSTM/SimpleRNN layers 2..N: one stacked (2H, G*H) kernel
        and the bias. GRU keeps input and recurrent products apart, because its
        reset gate multiplies only the recurrent part.
        """
        import tensorflow as tf

        split = self.family.split_recurrent
        weights = []
        for i, layer in enumerate(self.layers):
            cell = layer.cell
            kernel, recurrent, bias = cell.kernel, cell.recurrent_kernel, cell.bias
            input_bias, recurrent_bias = (bias[0], bias[1]) if split else (bias, None)
            if i == 0 and fuse_embedding:
                weights.append(
                    (
                        tf.matmul(self.embedding, kernel) + input_bias,  # (V, G*H)
                        recurrent,
                        recurrent_bias,
                    )
                )
            elif i > 0 and not split:
                weights.append((tf.concat([kernel, recurrent], axis=0), input_bias, None))
            else:
                weights.append((kernel, recurrent, (input_bias, recurrent_bias)))
        return weights

    def forward(
        self,
        ids_tm,
        states: list,
        training: bool = False,
        weights: list | None = None,
        record: Products | None = None,
    ):
        """Logits (T, B, V) and the new states from ids (T, B) and per-layer state lists.

        ``T`` must be static (known when the function is traced). ``weights``:
        ``derived_weights()`` computed once by a caller that runs many steps
        with unchanged weights (the sampler); by default computed here.
        ``record``: a ``Products`` to fill for ``gradients`` (the recurrent products'
        weights then enter as constants; their gradients come from one GEMM per layer).
        """
        import tensorflow as tf

        cell = CELLS[self.family.cell]
        steps = ids_tm.shape[0]
        if steps is None:
            raise ValueError("the fused model needs a static sequence length")
        input_drop = self.input_drop if training else 0.0
        output_drop = self.output_drop if training else 0.0
        # Input dropout sits between the embedding and the first kernel, so the
        # lookup table cannot be fused then.
        fuse = input_drop == 0.0
        if weights is None or not fuse:
            weights = self.derived_weights(fuse_embedding=fuse)
        if record is not None:
            weights = record.constants(weights)

        # Layer 1's input contribution for all timesteps: (T, B, G*H).
        w0 = weights[0]
        if fuse:
            first_inputs = tf.gather(w0[0], ids_tm)
        else:
            x = tf.nn.dropout(tf.gather(self.embedding, ids_tm), rate=input_drop)
            kernel, _, (input_bias, _) = w0
            first_inputs = tf.einsum("tbh,hg->tbg", x, kernel) + input_bias
        first_inputs = tf.unstack(first_inputs, num=steps)
        # Dropout masks for every timestep at once: one random op per layer, not
        # one per layer and timestep (the op count is what costs on a CPU). The
        # last layer's outputs are dropped after the loop, all together.
        batch, dtype = tf.shape(states[0][0])[0], states[0][0].dtype
        last = len(self.layers) - 1
        masks_in, masks_out = (
            [
                _keep_masks(rate, steps, batch, layer.cell.units, dtype)
                for layer in self.layers[:last]
            ]
            for rate in (input_drop, output_drop)
        )

        states = [list(s) for s in states]
        outputs = []
        for t in range(steps):
            x = None
            for i in range(len(self.layers)):
                if x is not None and input_drop:
                    x = x * masks_in[i - 1][t]
                pre, recurrent_term = self._pre_activations(
                    i, x, states[i][0], first_inputs[t], weights, fuse, record
                )
                states[i] = cell(pre, states[i], recurrent_term)
                x = states[i][0]
                if output_drop and i < last:
                    x = x * masks_out[i][t]
            outputs.append(x)
        hidden = tf.stack(outputs)  # (T, B, H)
        if output_drop:
            hidden = tf.nn.dropout(hidden, rate=output_drop)
        logits = tf.einsum("tbh,hv->tbv", hidden, self.dense_kernel) + self.dense_bias
        return logits, states

    def _pre_activations(self, i, x, h_prev, first_input, weights, fuse, record):
        """Layer ``i``'s pre-activations (B, G*H) at one step from the layer below's output
        ``x`` and its own ``h_prev``, and (GRU) its recurrent term apart."""
        import tensorflow as tf

        if self.family.split_recurrent:
            if i == 0:
                _, recurrent, bias = weights[0]
                return first_input, tf.matmul(h_prev, recurrent) + (bias if fuse else bias[1])
            kernel, recurrent, (input_bias, recurrent_bias) = weights[i]
            pre = tf.matmul(x, kernel) + input_bias
            return pre, tf.matmul(h_prev, recurrent) + recurrent_bias
        if i == 0:
            inputs, pre = h_prev, first_input + _product(h_prev, weights[0][1])
        else:
            stacked, bias, _ = weights[i]
            inputs = tf.concat([x, h_prev], axis=1)
            pre = _product(inputs, stacked) + bias
        if record is not None:
            pre = record.keep(i, inputs, pre)
        return pre, None

    # -- the stateful interface, like calling the Keras model --

    def read_states(self) -> list:
        import tensorflow as tf

        return [[tf.convert_to_tensor(v) for v in layer.states] for layer in self.layers]

    def assign_states(self, states: list) -> None:
        for layer, values in zip(self.layers, states):
            for variable, value in zip(layer.states, values):
                variable.assign(value)

    def __call__(self, ids, training: bool = False):
        """ids (B, T) -> logits (B, T, V), carrying the state like the stateful model."""
        import tensorflow as tf

        logits, states = self.forward(tf.transpose(ids), self.read_states(), training)
        self.assign_states(states)
        return tf.transpose(logits, [1, 0, 2])


def _product(a, w):
    """a @ w in w's dtype, the result in a's: with a bfloat16 ``w`` (``backward.Products``
    under precision "bfloat16"), a float32 ``a`` is rounded to bfloat16 for the product."""
    import tensorflow as tf

    if a.dtype == w.dtype:
        return tf.matmul(a, w)
    return tf.cast(tf.matmul(tf.cast(a, w.dtype), w), a.dtype)


def _keep_masks(rate: float, steps: int, batch, units: int, dtype) -> list | None:
    """Per timestep, a (batch, units) mask of 0 and 1 / (1 - rate), as dropout multiplies."""
    import tensorflow as tf

    if not rate:
        return None
    keep = tf.random.uniform([steps, batch, units]) >= rate
    return tf.unstack(tf.cast(keep, dtype) / (1.0 - rate), num=steps)


def _lstm(pre, state: list, recurrent_term=None) -> list:
    """One LSTM step: gates i, f, c, o from the pre-activations (B, 4H); state [h, c]."""
    import tensorflow as tf

    i, f, g, o = tf.split(pre, 4, axis=1)
    c = tf.sigmoid(f) * state[1] + tf.sigmoid(i) * tf.tanh(g)
    return [tf.sigmoid(o) * tf.tanh(c), c]


def _gru(pre, state: list, recurrent_term) -> list:
    """One GRU step (reset after): gates z, r, h from the input and recurrent terms."""
    import tensorflow as tf

    x_z, x_r, x_h = tf.split(pre, 3, axis=1)
    r_z, r_r, r_h = tf.split(recurrent_term, 3, axis=1)
    z = tf.sigmoid(x_z + r_z)
    r = tf.sigmoid(x_r + r_r)
    candidate = tf.tanh(x_h + r * r_h)
    return [z * state[0] + (1.0 - z) * candidate]


def _tanh(pre, state: list, recurrent_term=None) -> list:
    """One simple RNN step: h = tanh(pre)."""
    import tensorflow as tf

    return [tf.tanh(pre)]


# The step equations a family's layers use, by the name its Family.cell gives.
CELLS = {"lstm": _lstm, "gru": _gru, "tanh": _tanh}
