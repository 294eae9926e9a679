"""Each model family as the generator sees it: a step provider.

A provider knows one family's state and nothing of sampling:

- ``zeros(batch)``: the state of ``batch`` rows that have read nothing
- ``start(prefix)``: a row about to read ``prefix`` (ids): the first id it reads,
  the ids still to read one step at a time, and the row's state (batch 1)
- ``graph_start(prefix, lengths)``: the same in TensorFlow ops for rows of padded
  prefixes (N, L), row r's in its first ``lengths[r]`` places: the state, how
  many of each row's tokens are read before it draws, and the ids read first
- ``prepare()``: constants derived from the weights once per compiled call
- ``step(ids, state, prepared)``: ids read now (N,) and the state in, logits
  (N, V) and the new state out; a pure function, so every row owns its state

``Sampler`` (kerasgen.sampler) is the loop over any provider; the server's
batches, ``kerasgen sample`` and evaluate's samples run it, and the export runs
the same steps in its graph (``kerasgen.export``).
"""

from __future__ import annotations

import numpy as np

from kerasgen.model import context_length, family_of, rnn_layers


def step_provider(model, fused: bool = True):
    """The provider for ``model``'s family (``fused``: recurrent layers on the fast path)."""
    kind = family_of(model)
    if kind.windowed:
        return WindowSteps(model)
    if kind.recurrent:
        return FusedRecurrentSteps(model) if fused else KerasRecurrentSteps(model)
    return BigramSteps(model)


class RecurrentSteps:
    """A recurrent stack: the state is each layer's carried tensors, (N, units) each."""

    def __init__(self, model):
        self.model, self.layers = model, rnn_layers(model)

    def zeros(self, batch):
        import tensorflow as tf

        return [
            [tf.zeros(tf.stack([batch, v.shape[1]]), v.dtype) for v in layer.states]
            for layer in self.layers
        ]

    def start(self, prefix: np.ndarray):
        # The whole prefix is read in the loop, from a zero state.
        return int(prefix[0]), prefix[1:], self.zeros(1)

    def graph_start(self, prefix, lengths):
        import tensorflow as tf

        return self.zeros(tf.shape(prefix)[0]), lengths, prefix[:, 0]


class FusedRecurrentSteps(RecurrentSteps):
    """LSTM, GRU and simple RNN on ``kerasgen.fused``'s math over the layers' weights."""

    def __init__(self, model):
        from kerasgen.fused import FusedModel

        super().__init__(model)
        self.net = FusedModel(model)

    def prepare(self):
        return self.net.derived_weights()  # the fused weights, once per compiled call

    def step(self, ids, states, weights):
        logits, states = self.net.forward(ids[None, :], states, weights=weights)
        return logits[0], states


class KerasRecurrentSteps(RecurrentSteps):
    """The same families through the Keras layers (which carry state in variables: the
    row states are put in before each call and read out after it)."""

    def prepare(self):
        return ()

    def step(self, ids, states, unused):
        import tensorflow as tf

        for layer, values in zip(self.layers, states):
            for variable, value in zip(layer.states, values):
                variable.assign(value)
        logits = self.model(ids[:, None], training=False)[:, -1, :]
        return logits, [[tf.convert_to_tensor(v) for v in layer.states] for layer in self.layers]


class WindowSteps:
    """A transformer: the state is the sliding window of the tokens before the one read
    now (N, context) and how full it is (N,). The whole window goes through the model at
    each step (no cache); the causal mask keeps the padding past ``filled`` unseen."""

    def __init__(self, model):
        self.model, self.context = model, context_length(model)

    def zeros(self, batch):
        import tensorflow as tf

        return (
            tf.zeros(tf.stack([batch, self.context]), tf.int32),
            tf.zeros(tf.stack([batch]), tf.int32),
        )

    def start(self, prefix: np.ndarray):
        import tensorflow as tf

        # Only the last ``context`` tokens can matter: they go straight into the window.
        before = prefix[:-1][-self.context :] if len(prefix) > 1 else prefix[:0]
        window = np.zeros((1, self.context), np.int32)
        window[0, : len(before)] = before
        return (
            int(prefix[-1]),
            prefix[:0],
            (tf.constant(window), tf.constant([len(before)], tf.int32)),
        )

    def graph_start(self, prefix, lengths):
        import tensorflow as tf

        # The window holds what comes before the last prefix token.
        context = self.context
        before = tf.minimum(lengths - 1, context)  # (N,)
        src = (lengths - 1 - before)[:, None] + tf.range(context)[None, :]  # (N, C)
        valid = tf.range(context)[None, :] < before[:, None]
        src = tf.minimum(src, tf.shape(prefix)[1] - 1)
        window = tf.where(valid, tf.gather(prefix, src, batch_dims=1), 0)
        last = tf.gather(prefix, lengths - 1, batch_dims=1)
        return (window, before), tf.ones_like(lengths), last

    def prepare(self):
        return ()

    def step(self, ids, window_filled, unused):
        import tensorflow as tf

        window, filled = window_filled
        # Append ``ids`` (sliding once full), then read the logits at the newest position.
        positions = tf.range(self.context)[None, :]  # (1, C)
        slid = tf.concat([window[:, 1:], ids[:, None]], axis=1)
        placed = tf.where(positions == filled[:, None], ids[:, None], window)
        window = tf.where((filled >= self.context)[:, None], slid, placed)
        filled = tf.minimum(filled + 1, self.context)
        logits = tf.gather(
            self.model(window, training=False), filled - 1, axis=1, batch_dims=1
        )  # (N, V): the newest token's
        return logits, (window, filled)


class BigramSteps:
    """A bigram: the next token from the current one only; nothing to carry."""

    def __init__(self, model):
        self.model = model

    def zeros(self, batch):
        import tensorflow as tf

        return tf.zeros(tf.stack([batch, 0]))  # nothing per row

    def graph_start(self, prefix, lengths):
        import tensorflow as tf

        # Only the last token matters.
        last = tf.gather(prefix, lengths - 1, batch_dims=1)
        return self.zeros(tf.shape(prefix)[0]), tf.ones_like(lengths), last

    def start(self, prefix: np.ndarray):
        return int(prefix[-1]), prefix[:0], self.zeros(1)

    def prepare(self):
        return ()

    def step(self, ids, unused, prepared):
        return self.model(ids[:, None], training=False)[:, -1, :], unused
