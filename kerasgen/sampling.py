"""How the next token is chosen: ``SamplingOptions`` and the draw itself.

``select_rows`` turns logits into the next ids inside the compiled loop
(``kerasgen.sampler``), each row with its own settings: argmax or a draw,
temperature, top-k, top-p, the constraint's allowed tokens, the word-level
glue rule. ``select_next`` is the same draw for rows that share one setting.

Randomness is stateless: generated token ``g`` of row ``r`` is drawn with a
uniform that is a pure function of ``(seed, g, r)``, so the same seed gives
the same text however the loop is split or compiled, and a row's text does not
depend on which other rows share its batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from kerasgen import checks

ARGMAX, SAMPLE, SAMPLE_AFTER_SPACE = 0, 1, 2  # sample=, as char-rnn's sample.py
SAMPLE_MODES = (ARGMAX, SAMPLE, SAMPLE_AFTER_SPACE)


@dataclass(frozen=True)
class SamplingOptions:
    sample: int = SAMPLE
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: int = 0
    # "python": the exact constraint (kerasgen.python_check); "python-tokens": the compiled
    # lexer's rules only (kerasgen.python_lexer); None or "none": off
    constrain: str | None = None

    def __post_init__(self):
        if self.constrain == "none":  # as --constrain spells it
            object.__setattr__(self, "constrain", None)
        checks.one_of("sample", self.sample, SAMPLE_MODES)
        checks.positive("temperature", self.temperature)
        checks.at_least("top_k", self.top_k, 0, "0: off")
        checks.in_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        checks.one_of("constrain", self.constrain, ("python", "python-tokens", None))
        checks.seed("seed", self.seed)

    def settings(self) -> dict:
        """What a measure reports it sampled with: temperature, top_k, top_p, seed, constrain."""
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "seed": self.seed,
            "constrain": self.constrain,
        }

    @property
    def features(self) -> tuple:
        """Which operations a compiled loop needs for these options: (draws, top-k, top-p,
        constraint, takes the most likely token at some steps, every row shares one seed,
        temperature and step: ``Rows`` sets the last). Seed, temperature and the values of
        k and p are inputs of the loop, so changing them never recompiles."""
        return (
            self.sample != ARGMAX,
            self.top_k > 0,
            self.top_p < 1.0,
            self.constrain is not None,
            self.sample != SAMPLE,
            False,
        )

    @staticmethod
    def union(features, shared: bool = False) -> tuple:
        """The features a loop needs for rows of each of ``features`` (``shared``: they have
        one seed, temperature and step, so the loop computes those once, not per row)."""
        if not features:
            return (False,) * 5 + (shared,)
        return tuple(any(f) for f in zip(*features))[:5] + (shared,)


def glue_rule(vocab):
    """Word level: (ends_in_word, starts_with_word), boolean arrays over the vocabulary, or
    None at other levels.

    A word token is a maximal run of word characters (with or without the
    space before it), so in the training text a token ending in a word
    character is never followed by one starting with a word character: that
    would be two words run together ("the" + "KING"). ``select_next`` never
    draws such a pair; at the bpe level subwords join by design, so it has no
    rule.
    """
    if vocab.level != "word":
        return None
    word = re.compile(r"\w")
    tokens = [vocab.decode([i]) for i in range(len(vocab))]  # the unknown token: "<unk>"
    ends = np.array([bool(word.match(t[-1:])) for t in tokens])
    starts = np.array([bool(word.match(t[:1])) for t in tokens])
    return ends, starts


def space_id(vocab) -> int:
    """The id after which ``--sample 2`` draws: the lone space token (-1: none)."""
    space = vocab.token_id(" ")
    return -1 if space is None else space


def select_next(
    logits,
    prev_ids,
    steps,
    seed,
    temperature,
    options: SamplingOptions,
    space_id: int,
    glue=None,
    allowed=None,
):
    """Next ids (N,) from logits (N, V) when every row samples with the same ``options``:
    row r draws as row r of ``select_rows`` (``steps``: a scalar or one per row;
    ``temperature`` may be a tensor, the exported model's input)."""
    import tensorflow as tf

    batch = tf.shape(logits)[0]
    rows = {
        "seed": tf.fill([batch], tf.cast(seed, tf.int64)),
        "row": tf.range(batch, dtype=tf.int32),
        "temperature": tf.fill([batch], tf.cast(temperature, tf.float32)),
        "mode": tf.fill([batch], options.sample),
        "top_k": tf.fill([batch], options.top_k),
        "top_p": tf.fill([batch], tf.constant(options.top_p, tf.float32)),
    }
    steps = tf.broadcast_to(tf.cast(steps, tf.int32), [batch])
    return select_rows(logits, prev_ids, steps, rows, options.features, space_id, glue, allowed)


def select_rows(
    logits, prev_ids, steps, rows: dict, features: tuple, space_id: int, glue=None, allowed=None
):
    """Next ids (N,) from logits (N, V): the one selection rule every generator shares.

    Each row has its own settings, ``rows``: "seed" (int64), "row" (its index among
    the samples of its request), "temperature", "mode" (``--sample``), "top_k"
    (0: off), "top_p" (1: off), each (N,). ``steps`` (N,): the generation index of
    the token each row draws (a scalar when ``features`` says the rows share it).
    ``features``: ``SamplingOptions.features`` of every row together (which
    operations the graph needs at all). ``glue``:
    ``glue_rule(vocab)``; tokens it forbids after ``prev_ids`` are never drawn.
    ``allowed``: (N, V) bool, the only ids that may be drawn (``PythonLexer.allowed``).
    """
    import tensorflow as tf

    draws, top_k, top_p = features[:3]  # see SamplingOptions.features
    if allowed is not None:
        logits = tf.where(allowed, logits, tf.constant(-np.inf, logits.dtype))
    if glue is not None:
        ends, starts = glue
        forbid = tf.logical_and(
            tf.gather(tf.constant(ends), prev_ids)[:, None], tf.constant(starts)[None, :]
        )
        logits = tf.where(forbid, tf.constant(-np.inf, logits.dtype), logits)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if not draws:
        return greedy
    # Shift the largest logit to 0 before dividing, so that a tiny temperature
    # gives -inf for the others (argmax) instead of inf - inf = nan.
    logits = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
    shared = features[5]  # one seed, temperature and step for every row: scalars
    logits = logits / (rows["temperature"][0] if shared else rows["temperature"][:, None])
    if top_k:
        # Each row's k-th largest logit (k <= 0: off).
        vocab = tf.shape(logits)[-1]
        k = tf.clip_by_value(rows["top_k"], 1, vocab)
        kth = tf.gather(
            tf.sort(logits, axis=-1, direction="DESCENDING"), k - 1, axis=1, batch_dims=1
        )[:, None]  # (N, 1)
        cut = (rows["top_k"] > 0)[:, None] & (logits < kth)
        logits = tf.where(cut, -np.inf, logits)
    if top_p:
        # Keep the smallest set of most likely ids whose probability reaches top_p.
        order = tf.argsort(logits, axis=-1, direction="DESCENDING")
        sorted_logits = tf.gather(logits, order, batch_dims=1)
        cum = tf.cumsum(tf.nn.softmax(sorted_logits), axis=-1)
        drop_sorted = ((cum - tf.nn.softmax(sorted_logits)) >= rows["top_p"][:, None]) & (
            rows["top_p"] < 1.0
        )[:, None]
        drop = tf.scatter_nd(
            tf.stack(
                [
                    tf.repeat(tf.range(tf.shape(order)[0]), tf.shape(order)[1]),
                    tf.reshape(order, [-1]),
                ],
                axis=1,
            ),
            tf.reshape(drop_sorted, [-1]),
            tf.shape(order),
        )
        logits = tf.where(drop, -np.inf, logits)
    # Inverse-CDF draw with one uniform per row from a counter-based hash:
    # integer arithmetic gives the same bits compiled (XLA) or not, which TF's
    # stateless categorical op does not.
    # ``steps`` and the "key" (``seed_keys``) are scalars when shared.
    seed = rows["seed"][0] if shared else rows["seed"]
    u = _uniform(seed, steps, rows["row"], rows.get("key"))  # (N,) in (0, 1)
    cdf = tf.cumsum(tf.nn.softmax(logits), axis=-1)  # (N, V)
    drawn = tf.reduce_sum(tf.cast(cdf < u[:, None] * cdf[:, -1:], tf.int32), axis=-1)
    drawn = tf.minimum(drawn, tf.shape(logits)[-1] - 1)
    if not features[4]:  # every row draws at every step
        return drawn
    mode = rows["mode"]
    draw = (mode == SAMPLE) | ((mode == SAMPLE_AFTER_SPACE) & (prev_ids == space_id))
    return tf.where(draw, drawn, greedy)


_MASK32 = 0xFFFFFFFF


def _mix32(x):
    """A 32-bit integer hash (Wellons' lowbias32) computed in int64, masked to 32 bits."""
    import tensorflow as tf

    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = tf.bitwise.bitwise_and(x * 0x7FEB352D, _MASK32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = tf.bitwise.bitwise_and(x * 0x846CA68B, _MASK32)  # wraps mod 2**64; low 32 bits exact
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _cast32(v):
    import tensorflow as tf

    return tf.bitwise.bitwise_and(tf.cast(v, tf.int64), _MASK32)


def seed_keys(seed):
    """The part of ``_uniform`` that depends on the seed alone (a loop computes it once)."""
    return _mix32(_cast32(seed))


def uniform_numpy(seed: int, step: int, row: int = 0) -> np.float32:
    """``_uniform`` in plain Python and NumPy, for a runner outside TensorFlow: the same
    bits for the same (seed, step, row)."""

    def mix(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & _MASK32
        x ^= x >> 15
        x = (x * 0x846CA68B) & _MASK32
        return x ^ (x >> 16)

    key = mix((mix(seed & _MASK32) + (step & _MASK32)) & _MASK32)
    h = mix((key + (row & _MASK32)) & _MASK32)
    return (np.float32(h >> 8) + np.float32(0.5)) / np.float32(1 << 24)


def draw_numpy(logits: np.ndarray, temperature: float, uniform: np.float32) -> int:
    """``select_rows``' draw for one row in NumPy float32, given its uniform: the same id
    as the compiled sampler for the same logits, but where float rounding (of the logits
    of another runtime, or of a sum in another order) moves a boundary of the cumulative
    distribution across the uniform."""
    z = np.asarray(logits, np.float32)
    e = np.exp((z - z.max()) / np.float32(temperature))  # the largest is exp(0): no max again
    cdf = (e / e.sum()).cumsum()
    return min(int(np.count_nonzero(cdf < uniform * cdf[-1])), len(cdf) - 1)


def _uniform(seed, steps, row, key=None):
    """Uniforms in (0, 1), one per row, a pure function of (seed, step, row), each (N,).
    ``key``: ``seed_keys(seed)``, if already computed."""
    import tensorflow as tf

    cast = _cast32
    key = seed_keys(seed) if key is None else key
    key = _mix32(cast(key + cast(steps)))  # (N,)
    h = _mix32(cast(key + cast(row)))
    # 24 bits fit a float32 exactly; +0.5 keeps the draw off 0 and 1.
    return (tf.cast(tf.bitwise.right_shift(h, 8), tf.float32) + 0.5) / float(1 << 24)
