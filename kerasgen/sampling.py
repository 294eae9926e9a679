"""Generate text from a trained model, one token (character, or word-level token) at a time.

``Generator`` runs the whole per-token loop inside one compiled
``tf.function`` (XLA on by default): a chunk of ``CHUNK`` tokens per call.
A recurrent model is computed with ``kerasgen.fused.FusedModel`` over its
weights, the recurrent state carried in its stateful layers between calls.
A transformer has no state; it reads a sliding window of the last
``context`` tokens, kept (with how much of it is filled) in variables
between calls. The chunk size is fixed, so asking for a different ``n``
never recompiles; ``n`` only decides how many chunks run.

Randomness is stateless: the draw for step ``s`` uses seed ``(seed, s)``, so
the same seed gives the same text however the loop is split or compiled.
``generate_reference`` is the plain Python step-by-step version of the same
procedure, kept as the definition the fast path is tested against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

ARGMAX, SAMPLE, SAMPLE_AFTER_SPACE = 0, 1, 2  # --sample, as char-rnn's sample.py
CHUNK = 128  # tokens per compiled call


@dataclass(frozen=True)
class SamplingOptions:
    sample: int = SAMPLE
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: int = 0

    def __post_init__(self):
        if self.sample not in (ARGMAX, SAMPLE, SAMPLE_AFTER_SPACE):
            raise ValueError(f"--sample must be 0, 1 or 2, got {self.sample}")
        if not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"--top_k must be >= 0 (0 turns it off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")


def decode_prime(prime: str) -> str:
    r"""Turn the escapes ``\n``, ``\t`` and ``\\`` typed on a command line into characters."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], prime)


def select_next(logits, prev_ids, step, seed, options: SamplingOptions, space_id: int):
    """Next ids (N,) from logits (N, V): the one selection rule both generators share."""
    import tensorflow as tf

    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if options.sample == ARGMAX:
        return greedy
    logits = logits / options.temperature
    if options.top_k:
        k = min(options.top_k, logits.shape[-1])
        kth = tf.math.top_k(logits, k=k).values[:, -1:]  # (N, 1)
        logits = tf.where(logits < kth, -np.inf, logits)
    if options.top_p < 1.0:
        # Keep the smallest set of most likely ids whose probability reaches top_p.
        order = tf.argsort(logits, axis=-1, direction="DESCENDING")
        sorted_logits = tf.gather(logits, order, batch_dims=1)
        cum = tf.cumsum(tf.nn.softmax(sorted_logits), axis=-1)
        drop_sorted = (cum - tf.nn.softmax(sorted_logits)) >= options.top_p
        drop = tf.scatter_nd(
            tf.stack([tf.repeat(tf.range(tf.shape(order)[0]), tf.shape(order)[1]),
                      tf.reshape(order, [-1])], axis=1),
            tf.reshape(drop_sorted, [-1]), tf.shape(order))
        logits = tf.where(drop, -np.inf, logits)
    # Inverse-CDF draw with one uniform per row from a counter-based hash:
    # integer arithmetic gives the same bits compiled (XLA) or not, which TF's
    # stateless categorical op does not.
    u = _uniform(seed, step, tf.shape(logits)[0])  # (N,) in (0, 1)
    cdf = tf.cumsum(tf.nn.softmax(logits), axis=-1)  # (N, V)
    drawn = tf.reduce_sum(tf.cast(cdf < u[:, None] * cdf[:, -1:], tf.int32), axis=-1)
    drawn = tf.minimum(drawn, tf.shape(logits)[-1] - 1)
    if options.sample == SAMPLE_AFTER_SPACE:
        return tf.where(prev_ids == space_id, drawn, greedy)
    return drawn


_MASK32 = 0xFFFFFFFF


def _mix32(x):
    """A 32-bit integer hash (Wellons' lowbias32) computed in int64, masked to 32 bits."""
    import tensorflow as tf

    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = tf.bitwise.bitwise_and(x * 0x7FEB352D, _MASK32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = tf.bitwise.bitwise_and(x * 0x846CA68B, _MASK32)  # wraps mod 2**64; low 32 bits exact
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _uniform(seed, step, batch):
    """Uniforms in (0, 1), one per row, a pure function of (seed, step, row)."""
    import tensorflow as tf

    def cast(v):
        return tf.bitwise.bitwise_and(tf.cast(v, tf.int64), _MASK32)

    key = _mix32(cast(_mix32(cast(seed)) + cast(step)))
    h = _mix32(cast(key + tf.range(batch, dtype=tf.int64)))
    # 24 bits fit a float32 exactly; +0.5 keeps the draw off 0 and 1.
    return (tf.cast(tf.bitwise.right_shift(h, 8), tf.float32) + 0.5) / float(1 << 24)


def _prime_ids(vocab, prime: str) -> np.ndarray:
    """Ids of the prime; an empty prime starts from the most frequent token (id 0)."""
    return vocab.encode(prime).astype(np.int32) if prime else np.zeros(1, np.int32)


def _warm_up(model, prime_ids: np.ndarray, batch: int) -> np.ndarray:
    """Reset the state and feed all but the last prime token; return the last (N,)."""
    from kerasgen.model import reset_states

    reset_states(model)
    if len(prime_ids) > 1:
        model(np.tile(prime_ids[None, :-1], (batch, 1)), training=False)
    return np.full(batch, prime_ids[-1], np.int32)


def _first_window(prime_ids: np.ndarray, batch: int, context: int) -> tuple[np.ndarray, int]:
    """A transformer's window (N, context) holding the prime's last ``context`` tokens
    left-aligned (positions 0..filled-1; the rest is padding it cannot see), and ``filled``."""
    kept = prime_ids[-context:]
    window = np.zeros((batch, context), np.int32)
    window[:, :len(kept)] = kept
    return window, len(kept)


class Generator:
    """Compiled sampler over a model built at batch size N (N streams at once)."""

    def __init__(self, model, vocab, jit_compile: bool = True, fused: bool = True):
        import tensorflow as tf

        from kerasgen.fused import FusedModel
        from kerasgen.model import context_length, rnn_layers

        self.model = model
        self.net = FusedModel(model) if fused and rnn_layers(model) else None
        self.vocab = vocab
        self.batch = int(model.inputs[0].shape[0])
        self.context = context_length(model)  # None: not a transformer
        if self.context is not None:  # the sliding window, carried between chunks
            self._window = tf.Variable(tf.zeros((self.batch, self.context), tf.int32),
                                       trainable=False)
            self._filled = tf.Variable(0, trainable=False)
        self.space_id = vocab.index.get(" ", -1)
        self._jit = jit_compile
        self._compiled = {}  # SamplingOptions -> compiled chunk function
        self._tf = tf

    def _chunk_fn(self, options: SamplingOptions):
        # One compiled loop per SamplingOptions (they decide which ops exist);
        # the length n, the prime and the seed are inputs, so they never recompile.
        key = options
        if key not in self._compiled:
            tf = self._tf

            def keras_chunk(last_ids, start_step, seed):
                out = tf.TensorArray(tf.int32, size=CHUNK)
                ids = last_ids
                for i in tf.range(CHUNK):
                    logits = self.model(ids[:, None], training=False)[:, -1, :]  # (N, V)
                    ids = select_next(logits, ids, start_step + i, seed, options, self.space_id)
                    out = out.write(i, ids)
                return tf.transpose(out.stack()), ids  # (N, CHUNK), (N,)

            def fused_chunk(last_ids, start_step, seed):
                # The fused weights (embedding-times-kernel table, stacked
                # kernels) are derived once per chunk, and the state is a loop
                # variable, written back to the layers once at the end.
                net = self.net
                weights = net.derived_weights()
                states = net.read_states()
                out = tf.TensorArray(tf.int32, size=CHUNK)
                ids = last_ids
                for i in tf.range(CHUNK):
                    logits, states = net.forward(ids[None, :], states, weights=weights)
                    ids = select_next(logits[0], ids, start_step + i, seed, options,
                                      self.space_id)  # logits[0]: (N, V)
                    out = out.write(i, ids)
                net.assign_states(states)
                return tf.transpose(out.stack()), ids  # (N, CHUNK), (N,)

            def window_chunk(last_ids, start_step, seed):
                # The whole window goes through the model at every step (no
                # cache); the causal mask keeps padding past ``filled`` unseen.
                context = self.context
                positions = tf.range(context)[None, :]  # (1, C)
                window, filled = self._window.read_value(), self._filled.read_value()
                out = tf.TensorArray(tf.int32, size=CHUNK)
                ids = last_ids
                for i in tf.range(CHUNK):
                    logits = self.model(window, training=False)  # (N, C, V)
                    logits = tf.gather(logits, filled - 1, axis=1)  # (N, V): the newest token's
                    ids = select_next(logits, ids, start_step + i, seed, options, self.space_id)
                    out = out.write(i, ids)
                    slid = tf.concat([window[:, 1:], ids[:, None]], axis=1)
                    placed = tf.where(positions == filled, ids[:, None], window)
                    window = tf.where(filled >= context, slid, placed)
                    filled = tf.minimum(filled + 1, context)
                self._window.assign(window)
                self._filled.assign(filled)
                return tf.transpose(out.stack()), ids  # (N, CHUNK), (N,)

            if self.context is not None:
                chunk = window_chunk
            else:
                chunk = keras_chunk if self.net is None else fused_chunk

            self._compiled[key] = tf.function(chunk, jit_compile=self._jit)
        return self._compiled[key]

    def generate_ids(self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions()
                     ) -> np.ndarray:
        """Ids of ``n`` new tokens after ``prime`` for each of the N streams: (N, n)."""
        if n < 0:
            raise ValueError(f"-n must be >= 0, got {n}")
        tf = self._tf
        prime_ids = _prime_ids(self.vocab, prime)
        if self.context is not None:
            window, filled = _first_window(prime_ids, self.batch, self.context)
            self._window.assign(window)
            self._filled.assign(filled)
            last = tf.fill([self.batch], int(prime_ids[-1]))
        else:
            last = tf.constant(_warm_up(self.model, prime_ids, self.batch))
        fn = self._chunk_fn(options)
        seed = tf.constant(options.seed, tf.int64)
        chunks = []
        for start in range(0, n, CHUNK):
            ids, last = fn(last, tf.constant(start, tf.int32), seed)
            chunks.append(ids.numpy())
        if not chunks:
            return np.zeros((self.batch, 0), np.int32)
        return np.concatenate(chunks, axis=1)[:, :n]

    def generate(self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions()
                 ) -> list[str]:
        """The prime followed by ``n`` generated tokens, one string per stream."""
        return [prime + self.vocab.decode(row) for row in self.generate_ids(n, prime, options)]


def generate_reference(model, vocab, n: int, prime: str = "",
                       options: SamplingOptions = SamplingOptions()) -> np.ndarray:
    """The plain step-by-step sampler: one eager model call per token, (N, n) ids.

    A transformer reads the last ``context`` tokens of everything so far, unpadded.
    """
    from kerasgen.model import context_length

    batch = int(model.inputs[0].shape[0])
    context = context_length(model)
    prime_ids = _prime_ids(vocab, prime)
    if context is None:
        ids = _warm_up(model, prime_ids, batch)
    else:
        ids = np.full(batch, prime_ids[-1], np.int32)
        seen = np.tile(prime_ids[None, :], (batch, 1))  # (N, so far)
    space_id = vocab.index.get(" ", -1)
    out = np.zeros((batch, n), np.int32)
    for step in range(n):
        if context is None:
            logits = model(ids[:, None], training=False)[:, -1, :]
        else:
            logits = model(seen[:, -context:], training=False)[:, -1, :]
        ids = select_next(logits, ids, step, options.seed, options, space_id).numpy()
        out[:, step] = ids
        if context is not None:
            seen = np.concatenate([seen, ids[:, None]], axis=1)
    return out
