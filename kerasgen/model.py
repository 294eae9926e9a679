"""The Keras Functional model: Embedding -> N stateful RNN layers -> Dense logits.

Every layer is named (``embedding``, ``lstm_1`` .. ``lstm_N``, ``logits``) so
checkpoints map weights by name, and the same ``ModelConfig`` rebuilds the model
at any batch size (training batch, 1 for sampling, N for batched sampling).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

RNN_FAMILIES = ("lstm", "gru", "rnn")
MODEL_FAMILIES = ("bigram",) + RNN_FAMILIES


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in the run folder's config.json."""

    vocab_size: int
    model: str = "lstm"
    rnn_size: int = 128
    num_layers: int = 2
    input_keep_prob: float = 1.0  # dropout on each RNN layer's input, as char-rnn
    output_keep_prob: float = 1.0  # dropout on each RNN layer's output

    def __post_init__(self):
        if self.model not in MODEL_FAMILIES:
            raise ValueError(f"unknown --model {self.model!r}; choose one of "
                             + ", ".join(MODEL_FAMILIES))
        for name in ("vocab_size", "rnn_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("input_keep_prob", "output_keep_prob"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} must be in (0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def differences(self, other: "ModelConfig") -> list[str]:
        """``name: mine != other`` for every field that differs."""
        return [f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
                for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)]


def rnn_layer_names(config: ModelConfig) -> list[str]:
    if config.model not in RNN_FAMILIES:
        return []
    return [f"{config.model}_{i + 1}" for i in range(config.num_layers)]


def build_model(config: ModelConfig, batch_size: int, stateful: bool = True):
    """The char model at a fixed batch size: int ids (B, T) -> logits (B, T, vocab).

    A stateful RNN needs the batch size in the Input. The default LSTM keeps
    Keras's cuDNN conditions (tanh/sigmoid, no recurrent dropout, no unroll),
    so on a GPU it runs the fused kernel.
    """
    import keras

    if config.model == "bigram":
        return _build_bigram(config, batch_size)
    rnn_class = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU,
                 "rnn": keras.layers.SimpleRNN}[config.model]
    ids = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")  # (B, T)
    # Unit-variance embeddings, as PyTorch's nn.Embedding and torch-rnn: Keras's
    # default uniform(-0.05, 0.05) makes the first layer's input ~30x weaker,
    # and the model then learns much more slowly at first (tiny Shakespeare,
    # default model, val loss after 3 epochs: 1.757 with Keras's default, 1.667
    # with this, as PyTorch's 1.66).
    x = keras.layers.Embedding(
        config.vocab_size, config.rnn_size, name="embedding",
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0))(ids)
    for i, name in enumerate(rnn_layer_names(config)):
        if config.input_keep_prob < 1.0:
            x = keras.layers.Dropout(1.0 - config.input_keep_prob, name=f"input_dropout_{i + 1}")(x)
        x = rnn_class(config.rnn_size, return_sequences=True, stateful=stateful, name=name)(x)
        if config.output_keep_prob < 1.0:
            x = keras.layers.Dropout(1.0 - config.output_keep_prob,
                                     name=f"output_dropout_{i + 1}")(x)
    # float32 logits even under a mixed-precision policy: softmax and loss need the range.
    logits = keras.layers.Dense(config.vocab_size, name="logits", dtype="float32")(x)  # (B, T, vocab)
    return keras.Model(ids, logits, name=f"char_{config.model}")


def _build_bigram(config: ModelConfig, batch_size: int):
    """The baseline: the next character's logits from the current character alone.

    One (V, V) table, row = current id, no recurrent state; ``rnn_size`` and
    ``num_layers`` do not apply. Named ``logits`` like the other models' output.
    """
    import keras

    ids = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")  # (B, T)
    logits = keras.layers.Embedding(config.vocab_size, config.vocab_size, name="logits",
                                    embeddings_initializer="zeros", dtype="float32")(ids)
    return keras.Model(ids, logits, name="char_bigram")  # (B, T, vocab)


def rnn_layers(model) -> list:
    return [layer for layer in model.layers if getattr(layer, "stateful", False)]


def reset_states(model) -> None:
    """Zero the carried state of every stateful layer (Keras 3 has no Model.reset_states)."""
    for layer in rnn_layers(model):
        layer.reset_state()


def count_params(model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def configure_cpu_threads() -> bool:
    """Run small ops one thread each, two ops at once, on small CPU-only machines.

    A char-RNN step is a long chain of small matmuls; splitting each one over
    the cores (TensorFlow's default) costs more in synchronisation than it
    gains. Measured on a 2-core CPU with the default 2x128 LSTM: 28,600 train
    chars/s with (intra 1, inter 2) against 16,000 with TensorFlow's defaults.
    Must run before TensorFlow executes its first op; returns whether it applied.
    """
    import os

    import tensorflow as tf

    if (os.cpu_count() or 1) > 4 or tf.config.list_physical_devices("GPU"):
        return False  # measured only on small CPUs; keep TensorFlow's defaults elsewhere
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:  # the runtime already started (e.g. a second call in one process)
        return False
    return True
