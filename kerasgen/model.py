"""The Keras Functional models, one builder per family, all ids (B, T) -> logits (B, T, V).

- ``lstm`` / ``gru`` / ``rnn``: Embedding -> N stateful RNN layers -> Dense logits.
- ``bigram``: one (V, V) table; the next token from the current one only.
- ``transformer``: a small decoder-only transformer (token + learned position
  embeddings, N pre-norm blocks of causal multi-head attention and an MLP);
  it sees at most ``context`` tokens, and carries no state between calls.

Every layer is named (``embedding``, ``lstm_1`` .. ``lstm_N``, ``block_1_attention``,
``logits``) so checkpoints map weights by name, and the same ``ModelConfig``
rebuilds the model at any batch size (training batch, 1 for sampling, N for
batched sampling).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from kerasgen import checks
from kerasgen.errors import ParameterError

MAX_LAYERS = 128  # far beyond any useful depth; Keras's graph recursion ends near 500


@dataclass(frozen=True)
class Family:
    """What the rest of kerasgen may ask about a model family; ``FAMILIES`` has them all.

    Code outside this module never compares family names: it asks these fields.
    """

    name: str
    help: str  # one line for --help
    recurrent: bool = False  # stateful layers whose state carries across batches
    windowed: bool = False  # sees at most ``context`` tokens and carries no state
    layer: str = ""  # the Keras layer class of a recurrent family's layers
    gates: int = 0  # gate blocks in a recurrent layer's kernels (G in G*H)
    cell: str = ""  # the step equations of its layers: a key of kerasgen.fused.CELLS
    # Its gates take the recurrent product apart from the input's (a GRU's reset gate
    # multiplies only the recurrent part), so the two are never summed in one matmul.
    split_recurrent: bool = False

    @property
    def sized(self) -> bool:
        """Whether ``rnn_size`` and ``num_layers`` apply (not to the bigram's table)."""
        return self.recurrent or self.windowed

    @property
    def distributable(self) -> bool:
        """Trains under a multi-device strategy (the fused recurrent path does)."""
        return self.recurrent

    def describe(self, config: ModelConfig) -> str:
        """Family and size in a few characters: ``bigram``, ``lstm 2x128``,
        ``transformer 4x128 h4 ctx64``."""
        if not self.sized:
            return self.name
        size = f"{self.name} {config.num_layers}x{config.rnn_size}"
        if self.windowed:
            size += f" h{config.n_head} ctx{config.context}"
        return size


FAMILIES = {
    f.name: f
    for f in (
        Family("lstm", "long short-term memory layers", True, False, "LSTM", 4, "lstm"),
        Family("gru", "gated recurrent unit layers", True, False, "GRU", 3, "gru", True),
        Family("rnn", "simple (Elman) RNN layers", True, False, "SimpleRNN", 1, "tanh"),
        Family("bigram", "the next token from the current one only (a V x V table; the baseline)"),
        Family(
            "transformer",
            "a small decoder-only transformer (causal self-attention, learned positions)",
            windowed=True,
        ),
    )
}
MODEL_FAMILIES = tuple(FAMILIES)
RNN_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.recurrent)
DEFAULT_FAMILY = "lstm"


def family(name: str) -> Family:
    """The family named ``name``; ParameterError for a name that is none."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ParameterError(
            "model", f"{name!r} is not a model family; choose one of " + ", ".join(FAMILIES)
        ) from None


def family_of(model) -> Family:
    """The family of a Keras model ``build_model`` made (it names each ``char_<family>``)."""
    return family(model.name.removeprefix("char_"))


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in the run folder's config.json."""

    vocab_size: int
    model: str = DEFAULT_FAMILY
    rnn_size: int = 128
    num_layers: int = 2
    input_keep_prob: float = 1.0  # dropout on each RNN layer's input, as char-rnn
    output_keep_prob: float = 1.0  # dropout on each RNN layer's output
    # Transformer only (rnn_size is its width, num_layers its blocks):
    n_head: int = 4
    dropout: float = 0.0  # on attention weights, residual branches and embeddings
    context: int = 0  # tokens it can see: training's --seq_length (0 for other families)

    def __post_init__(self):
        kind = family(self.model)
        for name in ("vocab_size", "rnn_size", "num_layers"):
            checks.at_least(name, getattr(self, name), 1)
        checks.at_most("num_layers", self.num_layers, MAX_LAYERS)
        for name in ("input_keep_prob", "output_keep_prob"):
            checks.in_range(name, getattr(self, name), 0.0, 1.0, low_open=True)
        checks.in_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if kind.windowed:
            if self.n_head < 1 or self.rnn_size % self.n_head:
                raise ParameterError(
                    "n_head",
                    f"{self.n_head} must divide rnn_size (the width, also n_embd) "
                    f"{self.rnn_size}; pick e.g. n_head=4 with rnn_size=128",
                )
            checks.at_least("context", self.context, 1)
        elif self.dropout:
            raise ParameterError(
                "dropout",
                f"applies to model='transformer'; a {self.model} model uses input_keep_prob / "
                "output_keep_prob",
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def differences(self, other: ModelConfig) -> list[str]:
        """``name: mine != other`` for every field that differs."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


def rnn_layer_names(config: ModelConfig) -> list[str]:
    if not family(config.model).recurrent:
        return []
    return [f"{config.model}_{i + 1}" for i in range(config.num_layers)]


def build_model(config: ModelConfig, batch_size: int, stateful: bool = True):
    """The char model at a fixed batch size: int ids (B, T) -> logits (B, T, vocab).

    A stateful RNN needs the batch size in the Input. The default LSTM keeps
    Keras's cuDNN conditions (tanh/sigmoid, no recurrent dropout, no unroll),
    so on a GPU it runs the fused kernel.
    """
    import keras

    kind = family(config.model)
    if kind.windowed:
        return _build_transformer(config, batch_size)
    if not kind.recurrent:
        return _build_bigram(config, batch_size)
    rnn_class = getattr(keras.layers, kind.layer)
    ids = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")  # (B, T)
    # Unit-variance embeddings, as PyTorch's nn.Embedding and torch-rnn: Keras's
    # default uniform(-0.05, 0.05) makes the first layer's input far weaker, and
    # the model then learns much more slowly at first (docs/results.md).
    x = keras.layers.Embedding(
        config.vocab_size,
        config.rnn_size,
        name="embedding",
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
    )(ids)
    for i, name in enumerate(rnn_layer_names(config)):
        if config.input_keep_prob < 1.0:
            x = keras.layers.Dropout(1.0 - config.input_keep_prob, name=f"input_dropout_{i + 1}")(x)
        x = rnn_class(config.rnn_size, return_sequences=True, stateful=stateful, name=name)(x)
        if config.output_keep_prob < 1.0:
            x = keras.layers.Dropout(1.0 - config.output_keep_prob, name=f"output_dropout_{i + 1}")(
                x
            )
    # float32 logits even under a mixed-precision policy: softmax and loss need the range.
    logits = keras.layers.Dense(config.vocab_size, name="logits", dtype="float32")(
        x
    )  # (B, T, vocab)
    return keras.Model(ids, logits, name=f"char_{config.model}")


def _build_bigram(config: ModelConfig, batch_size: int):
    """The baseline: the next character's logits from the current character alone.

    One (V, V) table, row = current id, no recurrent state; ``rnn_size`` and
    ``num_layers`` do not apply. Named ``logits`` like the other models' output.
    """
    import keras

    ids = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")  # (B, T)
    logits = keras.layers.Embedding(
        config.vocab_size,
        config.vocab_size,
        name="logits",
        embeddings_initializer="zeros",
        dtype="float32",
    )(ids)
    return keras.Model(ids, logits, name=f"char_{config.model}")  # (B, T, vocab)


@functools.cache  # one class per process; defined lazily so importing kerasgen stays light
def _position_embedding_class():
    import keras

    class PositionEmbedding(keras.layers.Layer):
        """Adds a learned vector per position: x (B, T, C) -> x + table[:T]; T <= context."""

        def __init__(self, context: int, width: int, **kwargs):
            super().__init__(**kwargs)
            self.context, self.width = context, width

        def build(self, input_shape):
            self.table = self.add_weight(
                shape=(self.context, self.width),
                name="embeddings",
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )

        def call(self, x):
            length = keras.ops.shape(x)[1]
            return x + keras.ops.cast(self.table[:length], x.dtype)[None]

        def get_config(self):
            return {**super().get_config(), "context": self.context, "width": self.width}

    return PositionEmbedding


def _build_transformer(config: ModelConfig, batch_size: int):
    """A GPT-style decoder: pre-norm blocks of causal self-attention and a 4x MLP.

    As nanoGPT's model.py: token embeddings plus learned position embeddings,
    ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``, a final LayerNorm, then
    the logits. Inputs may be shorter than ``context`` but never longer.
    """
    import keras

    width, heads = config.rnn_size, config.n_head
    init = keras.initializers.RandomNormal(stddev=0.02)  # GPT-2's init
    ids = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")  # (B, T)
    x = keras.layers.Embedding(
        config.vocab_size, width, name="embedding", embeddings_initializer=init
    )(ids)  # (B, T, C)
    x = _position_embedding_class()(config.context, width, name="position")(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="embedding_dropout")(x)
    for i in range(1, config.num_layers + 1):
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block_{i}_ln_1")(x)
        h = keras.layers.MultiHeadAttention(
            heads,
            width // heads,
            dropout=config.dropout,
            kernel_initializer=init,
            name=f"block_{i}_attention",
        )(h, h, use_causal_mask=True)  # (B, T, C)
        if config.dropout:
            h = keras.layers.Dropout(config.dropout, name=f"block_{i}_attention_dropout")(h)
        x = keras.layers.Add(name=f"block_{i}_attention_residual")([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block_{i}_ln_2")(x)
        h = keras.layers.Dense(
            4 * width, activation="gelu", kernel_initializer=init, name=f"block_{i}_mlp_in"
        )(h)  # (B, T, 4C)
        h = keras.layers.Dense(width, kernel_initializer=init, name=f"block_{i}_mlp_out")(h)
        if config.dropout:
            h = keras.layers.Dropout(config.dropout, name=f"block_{i}_mlp_dropout")(h)
        x = keras.layers.Add(name=f"block_{i}_mlp_residual")([x, h])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_f")(x)
    logits = keras.layers.Dense(
        config.vocab_size, name="logits", dtype="float32", kernel_initializer=init
    )(x)  # (B, T, vocab)
    return keras.Model(ids, logits, name=f"char_{config.model}")


def context_length(model) -> int | None:
    """How many tokens a windowed model sees at once; None for models without a limit."""
    if not family_of(model).windowed:
        return None
    return int(model.get_layer("position").context)


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
    gains (docs/speed.md has the figures).
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
