"""Generate text from a trained model, one token (character, word or subword) at a time.

How a sample starts. Before it generates, the model reads a *prefix*: the
run's preamble, then the prime. The preamble is a passage of the training
text that ends at a paragraph break (``choose_preamble``), recorded in the
run folder when the run was trained. So ``--prime "KING"`` is read as the
first word of a new paragraph, in a state the model knows from training,
instead of from the all-zero state that training almost never shows it
(the state is reset only at epoch starts). Runs trained before preambles
existed have none: their prefix is the prime alone (or the most frequent
token when the prime is empty), as before. ``prefix_ids`` is the one
definition, shared by the sampler and ``kerasgen evaluate``'s start penalty.

The loop. ``Sampler`` runs the per-token loop inside one compiled
``tf.function`` (XLA on by default), ``CHUNK`` tokens per call; the chunk size
is fixed, so neither ``n`` nor the prime's length ever recompiles. A
recurrent model reads its prefix in the same loop, the prefix's tokens
forced instead of drawn, so a long prime costs what generating as many
tokens does. A transformer's prefix goes straight into its sliding window
(only the last ``context`` tokens can matter), and a bigram reads only the
last token. Recurrent models are computed with ``kerasgen.fused.FusedModel``
over their own weights, the state a loop variable.

A constraint (``SamplingOptions.constrain``, ``"python"``:
``kerasgen.python_lexer``) is a lexer that runs in the same loop: it reads
every token taken from the prime on, and each draw comes from the model's
distribution renormalised over the tokens it allows next.

Randomness is stateless: generated token ``g`` of row ``r`` is drawn with a
uniform that is a pure function of ``(seed, g, r)``, so the same seed gives
the same text however the loop is split or compiled. ``generate_reference``
is the plain step-by-step version of the same procedure, kept as the
definition the fast path is tested against.

Text. ``Sampler.stream`` decodes each chunk as it is generated, with one
incremental decoder per sample (``vocab.decoder()``: a subword can end in
the middle of a character's bytes, which it holds back until the next chunk
completes them), and cuts each sample at its first stop text
(``StopTexts``), so the CLI can print text as it comes and memory stays flat
however long the sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from kerasgen.model import rnn_layers

ARGMAX, SAMPLE, SAMPLE_AFTER_SPACE = 0, 1, 2  # --sample, as char-rnn's sample.py
CHUNK = 128  # tokens per compiled call
MAX_SEED = 2**32 - 1  # seeds are 32-bit: the draws hash 32 bits, NumPy seeds take 32
PREAMBLE_CHARS = 256  # the preamble is at most this long


@dataclass(frozen=True)
class SamplingOptions:
    sample: int = SAMPLE
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: int = 0
    constrain: str | None = None  # "python": kerasgen.python_lexer's rules; None or "none": off

    def __post_init__(self):
        if self.constrain == "none":  # as --constrain spells it
            object.__setattr__(self, "constrain", None)
        if self.sample not in (ARGMAX, SAMPLE, SAMPLE_AFTER_SPACE):
            raise ValueError(f"--sample must be 0, 1 or 2, got {self.sample}")
        if not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"--top_k must be >= 0 (0 turns it off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.constrain not in (None, "python"):
            raise ValueError(f"--constrain must be python or none, got {self.constrain!r}")
        check_seed(self.seed)

    def settings(self) -> dict:
        """What a measure reports it sampled with: temperature, top_k, top_p, seed, constrain."""
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "seed": self.seed, "constrain": self.constrain}

    @property
    def structure(self) -> tuple:
        """What decides which operations the compiled loop holds; seed and temperature
        are inputs of the loop, so changing them never recompiles."""
        return self.sample, self.top_k, self.top_p, self.constrain


def check_seed(seed: int | None) -> None:
    """Raise ValueError unless ``seed`` is None or a whole number in 0..MAX_SEED."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"--seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")


def decode_prime(prime: str) -> str:
    r"""Turn the escapes ``\n``, ``\t`` and ``\\`` typed on a command line into characters."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], prime)


def choose_preamble(text: str, max_chars: int = PREAMBLE_CHARS) -> str:
    """The passage samples start after: the end of ``text`` up to its last blank line.

    At most ``max_chars`` characters, beginning at a line start. Without a
    blank line, up to the last line break; a text without line breaks gives
    no preamble.
    """
    end = text.rfind("\n\n")
    if end >= 0:
        end += 2
    else:
        end = text.rfind("\n") + 1
        if end == 0:
            return ""
    start = max(0, end - max_chars)
    if start > 0 and text[start - 1] != "\n":
        line_start = text.find("\n", start, end - 1)
        if line_start >= 0:
            start = line_start + 1
    return text[start:end]


def prefix_ids(vocab, preamble: str, prime: str) -> np.ndarray:
    """The tokens a model reads before it generates: the preamble, then the prime.

    Never empty: with neither, the most frequent token (id 0). Tokenized
    together, as the text would be.
    """
    text = preamble + prime
    return vocab.encode(text).astype(np.int32) if text else np.zeros(1, np.int32)


def _glue_rule(vocab):
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


def _space_id(vocab) -> int:
    """The id after which ``--sample 2`` draws: the lone space token (-1: none)."""
    space = vocab.token_id(" ")
    return -1 if space is None else space


def select_next(logits, prev_ids, steps, seed, temperature, options: SamplingOptions,
                space_id: int, glue=None, allowed=None):
    """Next ids (N,) from logits (N, V): the one selection rule every generator shares.

    ``steps``: the generation index of the token being drawn, a scalar or one
    per row; ``temperature`` may be a tensor (the exported model's input).
    ``glue``: ``_glue_rule(vocab)``; tokens it forbids after ``prev_ids`` are
    never drawn. ``allowed``: (N, V) bool, the only ids that may be drawn
    (``PythonLexer.allowed``).
    """
    import tensorflow as tf

    if allowed is not None:
        logits = tf.where(allowed, logits, tf.constant(-np.inf, logits.dtype))

    if glue is not None:
        ends, starts = glue
        forbid = tf.logical_and(tf.gather(tf.constant(ends), prev_ids)[:, None],
                                tf.constant(starts)[None, :])
        logits = tf.where(forbid, tf.constant(-np.inf, logits.dtype), logits)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if options.sample == ARGMAX:
        return greedy
    # Shift the largest logit to 0 before dividing, so that a tiny temperature
    # gives -inf for the others (argmax) instead of inf - inf = nan.
    logits = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
    logits = logits / tf.cast(temperature, logits.dtype)
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
    u = _uniform(seed, steps, tf.shape(logits)[0])  # (N,) in (0, 1)
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


def _uniform(seed, steps, batch):
    """Uniforms in (0, 1), one per row, a pure function of (seed, step of the row, row)."""
    import tensorflow as tf

    def cast(v):
        return tf.bitwise.bitwise_and(tf.cast(v, tf.int64), _MASK32)

    key = _mix32(cast(_mix32(cast(seed)) + cast(steps)))  # () or (N,)
    h = _mix32(cast(key + tf.range(batch, dtype=tf.int64)))
    # 24 bits fit a float32 exactly; +0.5 keeps the draw off 0 and 1.
    return (tf.cast(tf.bitwise.right_shift(h, 8), tf.float32) + 0.5) / float(1 << 24)


class StopTexts:
    """Cuts each of N streams of text at its first stop text (which is left out).

    ``feed`` takes the next piece of every stream and returns what can be
    shown: a stream's text up to a stop text, never the start of a possible
    one until the next piece settles it (the longest end of the text that
    begins a stop text is held back).
    """

    def __init__(self, stops, streams: int):
        self.stops = [s for s in stops]
        if any(not s for s in self.stops):
            raise ValueError("a stop text must not be empty")
        self.held = [""] * streams
        self.stopped = [False] * streams

    @property
    def all_stopped(self) -> bool:
        return bool(self.stops) and all(self.stopped)

    def feed(self, pieces: list[str]) -> list[str]:
        shown = []
        for row, piece in enumerate(pieces):
            if self.stopped[row]:
                shown.append("")
                continue
            text = self.held[row] + piece
            found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
            if found:
                self.stopped[row], self.held[row] = True, ""
                shown.append(text[:min(found)])
                continue
            keep = self._partial_stop(text)
            self.held[row] = text[len(text) - keep:]
            shown.append(text[:len(text) - keep])
        return shown

    def flush(self) -> list[str]:
        """What is still held back, once the streams end without a stop text."""
        shown, self.held = self.held, [""] * len(self.held)
        return shown

    def _partial_stop(self, text: str) -> int:
        """Length of the longest end of ``text`` that is a proper beginning of a stop text."""
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest


class Sampler:
    """Compiled sampler over a model built at batch size N (N samples at once).

    ``preamble``: the text read before every prime (the run's; see the module
    docstring).
    """

    def __init__(self, model, vocab, preamble: str = "", jit_compile: bool = True,
                 fused: bool = True):
        import tensorflow as tf

        from kerasgen.fused import FusedModel
        from kerasgen.model import context_length

        self.model, self.vocab, self.preamble = model, vocab, preamble
        self.recurrent = bool(rnn_layers(model))
        self.net = FusedModel(model) if fused and self.recurrent else None
        self.batch = model.inputs[0].shape[0]  # None: any batch (graph_generate only)
        self.context = context_length(model)  # None: not a transformer
        self.space_id = _space_id(vocab)
        self.glue = _glue_rule(vocab)
        self._jit = jit_compile
        self._compiled = {}  # see _chunk_fn's key -> compiled chunk function
        self._lex_rules = None  # the constraint's lexer (_lexer)
        self._tf = tf

    # -- one step of each kind of model: (ids read now, state) -> (logits (N, V), state) --

    def _fused_step(self, weights):
        def step(ids, states):
            logits, states = self.net.forward(ids[None, :], states, weights=weights)
            return logits[0], states
        return step

    def _keras_step(self, ids, states):
        # The Keras layers carry their own state: the stream's is put in before the
        # call and read out after it, so the layers' variables hold no stream's state.
        layers = rnn_layers(self.model)
        for layer, values in zip(layers, states):
            for variable, value in zip(layer.states, values):
                variable.assign(value)
        logits = self.model(ids[:, None], training=False)[:, -1, :]
        return logits, [[self._tf.convert_to_tensor(v) for v in layer.states] for layer in layers]

    def _window_step(self, ids, window_filled):
        # The window holds the tokens before ``ids``: append it (sliding once
        # full), then read the logits at its newest position. The whole window
        # goes through the model (no cache); the causal mask keeps the
        # padding past ``filled`` unseen.
        tf = self._tf
        window, filled = window_filled
        positions = tf.range(self.context)[None, :]  # (1, C)
        slid = tf.concat([window[:, 1:], ids[:, None]], axis=1)
        placed = tf.where(positions == filled[:, None], ids[:, None], window)
        window = tf.where((filled >= self.context)[:, None], slid, placed)
        filled = tf.minimum(filled + 1, self.context)
        logits = tf.gather(self.model(window, training=False), filled - 1, axis=1,
                           batch_dims=1)  # (N, V): the newest token's
        return logits, (window, filled)

    def _chunk_fn(self, options: SamplingOptions, state, draw: bool = True):
        """The compiled loop of CHUNK steps for this kind of selection.

        ``chunk(ids, state, lex, forced, n_forced, gen_start, seed, temperature,
        lex_start) -> (taken (N, CHUNK), last ids (N,), state, lex)``: a pure
        function of its inputs. ``state`` is the stream's model state
        (``_start``), ``lex`` its lexer state (``()`` without a constraint);
        the caller carries both from one chunk to the next, so every stream
        owns its state and streams of one sampler never mix.

        Step ``i`` reads ``ids`` and then takes ``forced[:, i]`` while
        ``i < n_forced`` (the prefix), else draws generation index
        ``gen_start + i``. ``draw`` False: a chunk of the prefix only, nothing
        drawn (so the logits and the draw are never computed). With
        ``options.constrain`` the lexer reads every id taken, starting afresh at
        generation index ``lex_start`` (the prime's first token), and the draws
        keep to it.
        """
        # A prefix-only chunk draws nothing: only the constraint changes what it computes.
        key = (options.structure, True) if draw else (options.constrain, False)
        if key not in self._compiled:
            tf = self._tf
            lexer = self._lexer() if options.constrain else None

            def chunk(ids, state, lex, forced, n_forced, gen_start, seed, temperature,
                      lex_start):
                if self.context is not None:
                    step = self._window_step
                elif self.net is not None:
                    # The fused weights are derived once per chunk; the state is a loop
                    # variable.
                    step = self._fused_step(self.net.derived_weights())
                elif self.recurrent:
                    step = self._keras_step
                else:  # a bigram: nothing to carry
                    step = _stateless_step(self.model)
                fresh = lexer.initial(self.batch) if lexer is not None else ()
                out = tf.TensorArray(tf.int32, size=CHUNK)
                for i in tf.range(CHUNK):
                    if lexer is not None:
                        restart = gen_start + i == lex_start
                        lex = tf.nest.map_structure(lambda a, b: tf.where(restart, a, b),
                                                    fresh, lex)
                    if draw:
                        allowed = None if lexer is None else lexer.allowed(lex)
                        logits, state = step(ids, state)
                        drawn = select_next(logits, ids, gen_start + i, seed, temperature,
                                            options, self.space_id, self.glue, allowed)
                        ids = tf.where(i < n_forced, forced[:, i], drawn)
                    else:
                        _, state = step(ids, state)
                        ids = forced[:, i]
                    if lexer is not None:
                        lex = lexer.advance(lex, ids)
                    out = out.write(i, ids)
                return tf.transpose(out.stack()), ids, state, lex  # (N, CHUNK), (N,), ...

            # The concrete function of the one signature every call has: calling it
            # skips tf.function's per-call matching of its arguments, which costs as
            # much as a good part of a small model's chunk.
            scalar = tf.TensorSpec([], tf.int32)

            def spec(structure):
                return tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype),
                                             structure)

            lex_spec = spec(lexer.initial(self.batch)) if lexer is not None else ()
            signature = [tf.TensorSpec([self.batch], tf.int32), spec(state), lex_spec,
                         tf.TensorSpec([self.batch, CHUNK], tf.int32), scalar, scalar,
                         tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.float32), scalar]
            self._compiled[key] = tf.function(chunk, jit_compile=self._jit
                                              ).get_concrete_function(*signature)
        return self._compiled[key]

    def _lexer(self):
        """The constraint's lexer (its rules as tensors; the state is each stream's)."""
        from kerasgen.python_lexer import PythonLexer

        if self._lex_rules is None:
            self._lex_rules = PythonLexer(self.vocab)
        return self._lex_rules

    def graph_generate(self, prefix, lengths, n, seed, temperature,
                       options: SamplingOptions = SamplingOptions()):
        """The whole of ``stream_ids`` in TensorFlow ops, one prefix per row (for an
        exported model): ids (N, n) of ``n`` tokens after each row's prefix.

        ``prefix`` (N, L) int32, row r's prefix left-aligned in its first
        ``lengths[r]`` >= 1 places; ``n``, ``seed``, ``temperature``: scalar
        tensors. Draws are those of ``stream_ids`` for the same prefix and
        seed (generation index g of row r uses the uniform of (seed, g, r)).
        A recurrent model needs ``fused``; the others a model built for any batch.
        """
        tf = self._tf
        batch = tf.shape(prefix)[0]
        last = tf.gather(prefix, lengths - 1, batch_dims=1)
        if self.context is not None:
            # The window holds what comes before the last prefix token (see _window_step).
            before = tf.minimum(lengths - 1, self.context)  # (N,)
            src = (lengths - 1 - before)[:, None] + tf.range(self.context)[None, :]  # (N, C)
            valid = tf.range(self.context)[None, :] < before[:, None]
            src = tf.minimum(src, tf.shape(prefix)[1] - 1)
            window = tf.where(valid, tf.gather(prefix, src, batch_dims=1), 0)
            step, state, read = self._window_step, (window, before), tf.ones_like(lengths)
            ids = last
        elif self.net is not None:
            zeros = [[tf.zeros(tf.stack([batch, v.shape[1]]), v.dtype) for v in layer.states]
                     for layer in self.net.layers]
            step, state, read = self._fused_step(self.net.derived_weights()), zeros, lengths
            ids = prefix[:, 0]
        else:  # a bigram: only the last token matters
            step, state, read = _stateless_step(self.model), tf.zeros(()), tf.ones_like(lengths)
            ids = last
        # Row r reads its first read[r] tokens, then draws; the loop runs until the
        # row with the longest prefix has drawn n.
        total = tf.reduce_max(read) - 1 + n
        out = tf.TensorArray(tf.int32, size=total)
        width = tf.shape(prefix)[1]
        for k in tf.range(total):
            logits, state = step(ids, state)
            drawn = select_next(logits, ids, k + 1 - read, seed, temperature, options,
                                self.space_id, self.glue)
            forced = tf.gather(prefix, tf.minimum(k + 1, width - 1)[None], axis=1)[:, 0]
            ids = tf.where(k + 1 < read, forced, drawn)
            out = out.write(k, ids)
        taken = tf.transpose(out.stack())  # (N, total)
        columns = (read - 1)[:, None] + tf.range(n)[None, :]  # (N, n)
        return tf.gather(taken, columns, batch_dims=1)

    def _start(self, prefix: np.ndarray) -> tuple[int, np.ndarray, object]:
        """A new stream about to read ``prefix``: (first id read, ids still to read, the
        model state it starts from)."""
        tf = self._tf
        if self.context is not None:
            # The sliding window of the tokens before the next one read, and how full it is.
            before = prefix[:-1][-self.context:] if len(prefix) > 1 else prefix[:0]
            window = np.zeros((self.batch, self.context), np.int32)
            window[:, :len(before)] = before
            filled = np.full(self.batch, len(before), np.int32)
            return int(prefix[-1]), prefix[:0], (tf.constant(window), tf.constant(filled))
        if not self.recurrent:  # a bigram sees only the last token
            return int(prefix[-1]), prefix[:0], tf.zeros(())
        zeros = [[tf.zeros(v.shape, v.dtype) for v in layer.states]
                 for layer in rnn_layers(self.model)]
        return int(prefix[0]), prefix[1:], zeros

    def stream_ids(self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions()):
        """Yield the ids of ``n`` new tokens after ``prime`` in pieces of shape (N, k).

        Each call is a stream of its own: its state lives in this generator, so
        streams of one sampler may be read in any interleaving. With
        ``options.constrain`` the lexer reads the prime (not the preamble) and
        every token drawn keeps to its rules.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        tf = self._tf
        prefix = prefix_ids(self.vocab, self.preamble, prime)
        first, forced, state = self._start(prefix)
        lex = ()
        if options.constrain:
            # A constraint implies a character-level run: one id per character.
            lex = self._start_lexer(prefix[len(prefix) - len(prime):len(prefix) - len(forced)])
        fn = self._chunk_fn(options, state)
        # The generation index of the prime's first token, were it taken in the loop.
        lex_start = tf.constant(-len(prime), tf.int32)
        ids = tf.fill([self.batch], first)
        seed = tf.constant(options.seed, tf.int64)
        temperature = tf.constant(options.temperature, tf.float32)
        total = len(forced) + n
        no_prefix = tf.zeros((self.batch, CHUNK), tf.int32)
        for start in range(0, total, CHUNK):
            taken = forced[start:start + CHUNK]
            block = no_prefix
            if len(taken):
                padded = np.zeros((self.batch, CHUNK), np.int32)
                padded[:, :len(taken)] = taken
                block = tf.constant(padded)
            # A chunk of prefix only (a long prime) draws nothing: a cheaper loop.
            chunk = self._chunk_fn(options, state, draw=False) if len(taken) == CHUNK else fn
            out, ids, state, lex = chunk(ids, state, lex, block, tf.constant(len(taken), tf.int32),
                                         tf.constant(start - len(forced), tf.int32), seed,
                                         temperature, lex_start)
            new = out.numpy()[:, len(taken):total - start]
            if new.shape[1]:
                yield new

    def _start_lexer(self, unread: np.ndarray):
        """The lexer's state for a new stream: the initial state, having read the prime's
        ids that the loop will not take (a recurrent model's first id; all of them for the
        other models)."""
        lexer = self._lexer()
        state = lexer.initial(self.batch)
        if len(unread):
            state = lexer.read(state, np.tile(unread[None, :], (self.batch, 1)))
        return state

    def generate_ids(self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions()
                     ) -> np.ndarray:
        """Ids of ``n`` new tokens after ``prime`` for each of the N streams: (N, n)."""
        pieces = list(self.stream_ids(n, prime, options))
        return np.concatenate(pieces, axis=1) if pieces else np.zeros((self.batch, 0), np.int32)

    def stream(self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions(),
               stop=()):
        """Yield the text of the N samples in pieces, a list of N strings each time.

        The first pieces are the prime. Each sample ends at ``n`` tokens or
        just before its first stop text after the prime; generation ends as
        soon as every sample has stopped.
        """
        cut = StopTexts(stop, self.batch)
        decoders = [self.vocab.decoder() for _ in range(self.batch)]
        yield [prime] * self.batch
        for ids in self.stream_ids(n, prime, options):
            yield cut.feed([d.decode(row) for d, row in zip(decoders, ids)])
            if cut.all_stopped:
                return
        # Bytes of a character the sample ended in the middle of (U+FFFD), then
        # whatever the stop texts still hold back.
        yield [a + b for a, b in zip(cut.feed([d.flush() for d in decoders]), cut.flush())]

    def generate(self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions(),
                 stop=()) -> list[str]:
        """The prime followed by the generated text, one string per stream."""
        texts = [[] for _ in range(self.batch)]
        for pieces in self.stream(n, prime, options, stop):
            for text, piece in zip(texts, pieces):
                text.append(piece)
        return ["".join(text) for text in texts]


def _stateless_step(model):
    """The step of a model with nothing to carry (a bigram): logits of the ids read now."""
    def step(ids, unused):
        return model(ids[:, None], training=False)[:, -1, :], unused
    return step


def generate_reference(model, vocab, n: int, prime: str = "",
                       options: SamplingOptions = SamplingOptions(),
                       preamble: str = "") -> np.ndarray:
    """The plain step-by-step sampler: one eager model call per token, (N, n) ids.

    Reads the prefix in one call from a zero state; a transformer reads the
    last ``context`` tokens of everything so far, unpadded.
    """
    from kerasgen.model import context_length, reset_states

    batch = int(model.inputs[0].shape[0])
    context = context_length(model)
    prefix = prefix_ids(vocab, preamble, prime)
    seen = np.tile(prefix[None, :], (batch, 1))  # (N, so far)
    reset_states(model)
    if context is None and len(prefix) > 1:
        model(seen[:, :-1], training=False)
    ids = seen[:, -1]
    space_id, glue = _space_id(vocab), _glue_rule(vocab)
    out = np.zeros((batch, n), np.int32)
    for step in range(n):
        if context is None:
            logits = model(ids[:, None], training=False)[:, -1, :]
        else:
            logits = model(seen[:, -context:], training=False)[:, -1, :]
        ids = select_next(logits, ids, step, options.seed, options.temperature, options,
                          space_id, glue).numpy()
        out[:, step] = ids
        seen = np.concatenate([seen, ids[:, None]], axis=1)
    return out
