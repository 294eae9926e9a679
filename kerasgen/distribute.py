"""Training on several devices or machines with ``tf.distribute``, streams kept intact.

``batch_size`` is the global batch: B contiguous streams. With R replicas,
replica r always gets rows ``r*B/R .. (r+1)*B/R - 1`` of every batch, so its
recurrent state keeps continuing the same streams from batch to batch. The
rows are split explicitly (``experimental_distribute_values_from_function``
with the global replica id), never by tf.data auto-sharding, which would
hand a replica other streams' text.

The recurrent state is not kept in the Keras layers' variables here (one
variable cannot hold a different state on each replica): each replica's
state is a tensor the step takes and returns, so it stays on its device.
Gradients are summed over all replicas (the loss of each replica is its sum
over characters divided by the global number of characters), then clipped by
their global norm and applied once, exactly as on one device.

Multi-machine: every machine runs the same ``kerasgen train --strategy
multiworker`` with ``TF_CONFIG`` set; only the chief (the "chief" task, or
worker 0 when there is none) writes the run folder, checkpoints and
TensorBoard logs. A worker that stops answering makes the others fail within
``COLLECTIVE_TIMEOUT_S`` with an error instead of hanging; the chief's last
checkpoint is untouched and ``--init_from`` resumes from it.
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
# A collective (gradient all-reduce) that takes longer than this means a worker
# is gone; KERASGEN_COLLECTIVE_TIMEOUT_S overrides it (tests use a short one).
COLLECTIVE_TIMEOUT_S = 60.0


def make_strategy(name: str):
    """The ``tf.distribute`` strategy for ``--strategy``.

    auto: MirroredStrategy when more than one GPU is visible, else the default
    (single-device) strategy. mirrored: all local GPUs, or, with none, all
    logical CPU devices (``tf.config.set_logical_device_configuration``).
    multiworker: MultiWorkerMirroredStrategy over the cluster in ``TF_CONFIG``.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown --strategy {name!r}; choose one of " + ", ".join(STRATEGIES))
    if name == "auto":  # physical devices: listing them does not start the runtime
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
                   or [d.name for d in tf.config.list_logical_devices("CPU")])
        return tf.distribute.MirroredStrategy(devices=devices)
    if not os.environ.get("TF_CONFIG"):
        raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable "
                         "(the cluster and this machine's task); see README 'Scaling out'")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError:
        raise ValueError("TF_CONFIG is not valid JSON; see README 'Scaling out'") from None
    timeout = float(os.environ.get("KERASGEN_COLLECTIVE_TIMEOUT_S", COLLECTIVE_TIMEOUT_S))
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def is_chief(strategy) -> bool:
    """Whether this process writes the run folder (always, outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def replica_batch(batch_size: int, strategy) -> int:
    """Rows per replica; the global batch must split evenly."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"--batch_size {batch_size} does not split over {replicas} replicas; "
                         f"use a multiple of {replicas}")
    return batch_size // replicas


class DistributedSteps:
    """Compiled train/eval steps over a strategy, with per-replica stream state.

    ``train(x, y)`` and ``evaluate(x, y)`` take global (B, T) numpy batches and
    return the mean nats/char over the whole global batch.
    """

    def __init__(self, strategy, model, optimizer, batch_size: int, jit_compile: bool = False,
                 line_start_id: int | None = None):
        import tensorflow as tf

        from kerasgen.fused import FusedModel
        from kerasgen.train import start_rows

        self.strategy = strategy
        self.rows = replica_batch(batch_size, strategy)
        self.net = net = FusedModel(model)
        variables = model.trainable_variables
        sum_ = tf.distribute.ReduceOp.SUM

        def replica_loss(x, y, states, training, global_chars):
            logits, states = net.forward(tf.transpose(x), states, training)  # (T, b, V)
            nats = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.transpose(y), logits)
            return tf.reduce_sum(nats) / global_chars, states

        def train_replica(x, y, states):
            global_chars = tf.cast(tf.size(x) * strategy.num_replicas_in_sync, tf.float32)
            states = start_rows(states, x, line_start_id)
            with tf.GradientTape() as tape:
                loss, states = replica_loss(x, y, states, True, global_chars)
            # Dense (the embedding's gradient is sparse with input dropout): one all-reduce.
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
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

        shapes = [[(self.rows,) + tuple(v.shape[1:]) for v in layer.states]
                  for layer in self.net.layers]
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: [[tf.zeros(s) for s in layer] for layer in shapes])

    def _split(self, batch):
        """Replica r's rows r*b .. (r+1)*b - 1 of a global (B, T) batch."""
        import tensorflow as tf

        rows = self.rows
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(batch[ctx.replica_id_in_sync_group * rows:
                                          (ctx.replica_id_in_sync_group + 1) * rows]))

    def reset(self) -> None:
        self.states = self.zero_states()

    def train(self, x, y) -> float:
        loss, self.states = self._train_step(self._split(x), self._split(y), self.states)
        return float(loss)

    def evaluate_batches(self, batches) -> float:
        """Mean loss over (x, y) batches read in order from a zero state."""
        import numpy as np

        states, losses = self.zero_states(), []
        for x, y in batches:
            loss, states = self._eval_step(self._split(x), self._split(y), states)
            losses.append(float(loss))
        return float(np.mean(losses))
