"""The ``tf.distribute`` strategy of ``--strategy``, and who writes the run folder.

The steps that run over a strategy, streams kept intact, are in
``kerasgen.steps`` (``DistributedSteps``).

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

from kerasgen.errors import ParameterError

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
        raise ParameterError("strategy", f"{name!r} is not one of " + ", ".join(STRATEGIES))
    if name == "auto":  # physical devices: listing them does not start the runtime
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        return tf.distribute.MirroredStrategy(devices=devices)
    if not os.environ.get("TF_CONFIG"):
        raise ParameterError(
            "strategy",
            "multiworker needs the TF_CONFIG environment variable "
            "(the cluster and this machine's task); see docs/distributed.md",
        )
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError:
        raise ValueError("TF_CONFIG is not valid JSON; see docs/distributed.md") from None
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
    return (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def replica_batch(batch_size: int, strategy) -> int:
    """Rows per replica; the global batch must split evenly."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ParameterError(
            "batch_size",
            f"{batch_size} does not split over {replicas} replicas; use a multiple of {replicas}",
        )
    return batch_size // replicas
