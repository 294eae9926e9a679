"""The compiled training and validation steps, on one device or over a ``tf.distribute``
strategy, behind one interface: ``reset()``, ``train(x, y) -> loss`` and
``evaluate_batches(batches) -> mean loss``.

Stateful streams: the recurrent state carries from one batch to the next;
``reset`` zeroes it (epoch starts, validation). A stream whose batch begins
at a line start (a newline) starts from a zero state (``start_rows``), the
state sampling starts in.

Distributed: ``batch_size`` is the global batch, B contiguous streams. With R
replicas, replica r always gets rows ``r*B/R .. (r+1)*B/R - 1`` of every
batch, so its recurrent state keeps continuing the same streams from batch to
batch. The rows are split explicitly (``experimental_distribute_values_from_function``
with the global replica id), never by tf.data auto-sharding, which would hand
a replica other streams' text. The state is not kept in the Keras layers'
variables there (one variable cannot hold a different state on each
replica): each replica's state is a tensor the step takes and returns.
Gradients are summed over all replicas (each replica's loss is its sum over
characters divided by the global number of characters), then clipped by
their global norm and applied once, exactly as on one device.
"""

from __future__ import annotations

import numpy as np

from kerasgen.distribute import replica_batch
from kerasgen.model import reset_states, rnn_layers


def start_rows(states: list, x, line_start_id: int | None) -> list:
    """Zero the state of every row whose batch ``x`` (B, T) begins with ``line_start_id``.

    Sampling starts from a zero state that reads a newline (the run's
    preamble); without this, training would show the model that state only
    at epoch starts, and samples would begin with garbage. ``states``: per
    layer, a list of (B, H) tensors.
    """
    import tensorflow as tf

    if line_start_id is None or not states:
        return states
    keep = tf.cast(x[:, :1] != line_start_id, states[0][0].dtype)  # (B, 1)
    return [[value * keep for value in layer] for layer in states]


class SingleDeviceSteps:
    """The one-device steps behind the same interface as ``DistributedSteps``."""

    def __init__(
        self,
        model,
        optimizer,
        fused: bool,
        jit_compile: bool,
        line_start_id: int | None = None,
        precision: str = "float32",
    ):
        self.model = model
        self.train_step, self.eval_step = compile_steps(
            model, optimizer, fused, jit_compile, line_start_id, precision
        )

    def reset(self) -> None:
        reset_states(self.model)

    def train(self, x, y) -> float:
        return float(self.train_step(x, y))

    def evaluate_batches(self, batches) -> float:
        """Mean loss over (x, y) batches read in order from a zero state; the training
        streams' state is put back afterwards (validation may come mid-epoch)."""
        layers = rnn_layers(self.model)
        kept = [[v.numpy() for v in layer.states] for layer in layers]
        reset_states(self.model)
        loss = float(np.mean([float(self.eval_step(x, y)) for x, y in batches]))
        for layer, values in zip(layers, kept):
            for variable, value in zip(layer.states, values):
                variable.assign(value)
        return loss


def compile_steps(
    model,
    optimizer,
    fused: bool = True,
    jit_compile: bool = False,
    line_start_id: int | None = None,
    precision: str = "float32",
):
    """The compiled ``train_step(x, y) -> loss`` and ``eval_step(x, y) -> loss``.

    x, y: (B, T) int32 batches; the loss is the mean nats/char. Both carry the
    recurrent state in the model's stateful layers. ``fused`` computes the
    logits with ``kerasgen.fused.FusedModel`` (the same weights and
    mathematics, fewer and larger operations) instead of calling the Keras
    layers. ``line_start_id`` (the newline's id): ``train_step`` starts every
    stream whose batch begins with it from a zero state (``start_rows``).
    ``precision`` ("float32" or "bfloat16"): what the fused step's recurrent products and
    weight-gradient GEMMs compute in (``kerasgen.backward``).
    """
    import tensorflow as tf

    from kerasgen import backward
    from kerasgen.fused import FusedModel

    net = FusedModel(model) if fused else None
    layers = rnn_layers(model)
    if fused:

        def logits_and_targets(x, y, training, record=None):
            # Time-major all the way to the loss: (T, B, V) logits, (T, B) targets.
            states = net.read_states()
            if training:
                states = start_rows(states, x, line_start_id)
            logits, states = net.forward(tf.transpose(x), states, training, record=record)
            return logits, tf.transpose(y), states
    else:

        def logits_and_targets(x, y, training, record=None):
            if training and line_start_id is not None:
                for layer, values in zip(
                    layers,
                    start_rows(
                        [[tf.convert_to_tensor(v) for v in layer.states] for layer in layers],
                        x,
                        line_start_id,
                    ),
                ):
                    for variable, value in zip(layer.states, values):
                        variable.assign(value)
            return model(x, training=training), y, None

    def mean_loss(targets, logits):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))

    variables = model.trainable_variables

    @tf.function(jit_compile=jit_compile, autograph=False)  # no tensor-dependent control flow
    def train_step(x, y):
        with tf.GradientTape() as tape:
            record = backward.Products.for_step(net, tape, precision) if fused else None
            logits, targets, states = logits_and_targets(x, y, True, record)
            loss = mean_loss(targets, tf.cast(logits, tf.float32))
            scaled = optimizer.scale_loss(loss)  # the loss itself unless mixed precision
        optimizer.apply(backward.gradients(tape, scaled, variables, record), variables)
        if states is not None:
            net.assign_states(states)
        return loss

    @tf.function(jit_compile=jit_compile, autograph=False)  # no tensor-dependent control flow
    def eval_step(x, y):
        logits, targets, states = logits_and_targets(x, y, False)
        if states is not None:
            net.assign_states(states)
        return mean_loss(targets, tf.cast(logits, tf.float32))

    return train_step, eval_step


class DistributedSteps:
    """Compiled train/eval steps over a strategy, with per-replica stream state.

    ``train(x, y)`` and ``evaluate(x, y)`` take global (B, T) numpy batches and
    return the mean nats/char over the whole global batch.
    """

    def __init__(
        self,
        strategy,
        model,
        optimizer,
        batch_size: int,
        jit_compile: bool = False,
        line_start_id: int | None = None,
        precision: str = "float32",
    ):
        import tensorflow as tf

        from kerasgen import backward
        from kerasgen.fused import FusedModel

        self.strategy = strategy
        self.rows = replica_batch(batch_size, strategy)
        self.net = net = FusedModel(model)
        variables = model.trainable_variables
        sum_ = tf.distribute.ReduceOp.SUM

        def replica_loss(x, y, states, training, global_chars, record=None):
            logits, states = net.forward(tf.transpose(x), states, training, record=record)
            nats = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.transpose(y), logits)
            return tf.reduce_sum(nats) / global_chars, states

        def train_replica(x, y, states):
            global_chars = tf.cast(tf.size(x) * strategy.num_replicas_in_sync, tf.float32)
            states = start_rows(states, x, line_start_id)
            with tf.GradientTape() as tape:
                record = backward.Products.for_step(net, tape, precision)
                loss, states = replica_loss(x, y, states, True, global_chars, record)
            # Dense (the embedding's gradient is sparse with input dropout): one all-reduce.
            grads = backward.gradients(tape, loss, variables, record)
            grads = [tf.convert_to_tensor(g) for g in grads]
            # One batched all-reduce: the sum over replicas is the gradient of
            # the global mean loss.
            loss, grads = tf.distribute.get_replica_context().all_reduce(sum_, (loss, grads))
            return loss, grads, states

        def eval_replica(x, y, states):
            global_chars = tf.cast(tf.size(x) * strategy.num_replicas_in_sync, tf.float32)
            loss, states = replica_loss(x, y, states, False, global_chars)
            return tf.distribute.get_replica_context().all_reduce(sum_, loss), states

        def first(value):  # an all-reduced value: the same on every replica
            return strategy.experimental_local_results(value)[0]

        @tf.function(jit_compile=jit_compile, autograph=False)
        def train_step(x, y, states):
            loss, grads, states = strategy.run(train_replica, args=(x, y, states))
            # Clipping (global norm) and Adam run once, on the summed gradients.
            optimizer.apply([first(g) for g in grads], variables)
            return first(loss), states

        @tf.function(jit_compile=jit_compile, autograph=False)
        def eval_step(x, y, states):
            loss, states = strategy.run(eval_replica, args=(x, y, states))
            return first(loss), states

        self._train_step, self._eval_step = train_step, eval_step
        self.states = self.zero_states()

    def zero_states(self):
        """A zero state for every layer, on every replica."""
        import tensorflow as tf

        shapes = [
            [(self.rows,) + tuple(v.shape[1:]) for v in layer.states] for layer in self.net.layers
        ]
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: [[tf.zeros(s) for s in layer] for layer in shapes]
        )

    def _split(self, batch):
        """Replica r's rows r*b .. (r+1)*b - 1 of a global (B, T) batch."""
        import tensorflow as tf

        rows = self.rows
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(
                batch[
                    ctx.replica_id_in_sync_group * rows : (ctx.replica_id_in_sync_group + 1) * rows
                ]
            )
        )

    def reset(self) -> None:
        self.states = self.zero_states()

    def train(self, x, y) -> float:
        loss, self.states = self._train_step(self._split(x), self._split(y), self.states)
        return float(loss)

    def evaluate_batches(self, batches) -> float:
        """Mean loss over (x, y) batches read in order from a zero state."""
        states, losses = self.zero_states(), []
        for x, y in batches:
            loss, states = self._eval_step(self._split(x), self._split(y), states)
            losses.append(float(loss))
        return float(np.mean(losses))
