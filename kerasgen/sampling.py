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
is fixed, so neither ``n`` nor the prime's length ever recompiles. The
model's family comes in as a step provider (``kerasgen.families``): its
state, one step, and how a prime is read (a recurrent model reads its prefix
in the loop, forced instead of drawn, so a long prime costs what generating
as many tokens does; a transformer's goes straight into its sliding window;
a bigram reads only the last token). The state goes into each compiled call
and comes out of it: ``Rows`` holds it per row, with each row's prime,
seed and settings, so streams never share state and a server's streams can
join and leave a running batch.

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


def check_seed(seed: int | None) -> None:
    """Raise ValueError unless ``seed`` is None or a whole number in 0..MAX_SEED."""
    if seed is not None and (
        isinstance(seed, bool)
        or not isinstance(seed, (int, np.integer))
        or not 0 <= seed <= MAX_SEED
    ):
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
    ``_glue_rule(vocab)``; tokens it forbids after ``prev_ids`` are never drawn.
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
                shown.append(text[: min(found)])
                continue
            keep = self._partial_stop(text)
            self.held[row] = text[len(text) - keep :]
            shown.append(text[: len(text) - keep])
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
    """The generation loop over a model built at batch size N: N rows at once.

    The model's family comes in as a step provider (``kerasgen.families``); the
    loop knows no family. ``stream_ids`` runs one request on all N rows (N
    samples); ``rows()`` hands out the rows themselves, each its own stream
    (``Rows``: what the server batches). ``preamble``: the text read before every
    prime (the run's; see the module docstring).
    """

    def __init__(
        self, model, vocab, preamble: str = "", jit_compile: bool = True, fused: bool = True
    ):
        import tensorflow as tf

        from kerasgen.families import step_provider

        self.model, self.vocab, self.preamble = model, vocab, preamble
        self.steps = step_provider(model, fused)
        self.batch = model.inputs[0].shape[0]  # None: any batch (graph_generate only)
        self.space_id = _space_id(vocab)
        self.glue = _glue_rule(vocab)
        self._jit = jit_compile
        self._compiled = {}  # see _chunk_fn's key -> compiled chunk function
        self._lex_rules = None  # the constraint's lexer (_lexer)
        self._tf = tf

    def _chunk_fn(self, features: tuple, state, draw: bool = True):
        """The compiled loop of CHUNK steps for rows that need ``features``.

        ``chunk(ids, state, lex, forced, counters, ints, floats, seeds)
        -> (taken (N, CHUNK), last ids (N,), state, lex)``: a pure function of its
        inputs. ``state`` is the rows' model state (the provider's), ``lex`` their
        lexer state (``()`` without a constraint); ``counters`` (N, 3) each row's
        n_forced, gen_start and lex_start; ``ints``, ``floats``, ``seeds`` its
        settings (``Rows.packed``). The caller carries state and lex from one chunk
        to the next, so every row owns its state and streams never mix.

        Step ``i`` of row r reads ``ids[r]`` and then takes ``forced[r, i]`` while
        ``i < n_forced[r]`` (its prefix), else draws generation index
        ``gen_start[r] + i``. ``draw`` False: a chunk of prefixes only, nothing
        drawn (so the logits and the draw are never computed). With the
        constraint, the lexer reads every id taken, starting afresh at generation
        index ``lex_start[r]`` (the prime's first token), and the draws of the rows
        with ``rows["constrained"]`` keep to it.
        """
        constrain = features[3]
        # A prefix-only chunk draws nothing: only the constraint changes what it computes.
        key = (features, True) if draw else (constrain, False)
        if key not in self._compiled:
            tf = self._tf
            lexer = self._lexer() if constrain else None
            steps = self.steps

            def chunk(ids, state, lex, forced, counters, ints, floats, seeds):
                # Few inputs, each binding costs a call: the per-row numbers come packed.
                n_forced, gen_start, lex_start = tf.unstack(counters, axis=1)
                rows = {
                    "mode": ints[:, 0],
                    "top_k": ints[:, 1],
                    "row": ints[:, 2],
                    "constrained": ints[:, 3] > 0,
                    "temperature": floats[:, 0],
                    "top_p": floats[:, 1],
                    "seed": seeds,
                }
                prepared = steps.prepare()  # e.g. the fused weights, once per call
                # Once per call, not at every step (scalars when the rows share them).
                first = gen_start[0] if features[5] else gen_start
                rows = {**rows, "key": seed_keys(rows["seed"][0] if features[5] else rows["seed"])}
                fresh = lexer.initial(self.batch) if lexer is not None else ()
                out = tf.TensorArray(tf.int32, size=CHUNK)
                for i in tf.range(CHUNK):
                    if lexer is not None:
                        restart = gen_start + i == lex_start
                        lex = tf.nest.map_structure(
                            lambda a, b, r=restart: _where_rows(r, a, b), fresh, lex
                        )
                    if draw:
                        allowed = None
                        if lexer is not None:
                            allowed = lexer.allowed(lex) | ~rows["constrained"][:, None]
                        logits, state = steps.step(ids, state, prepared)
                        drawn = select_rows(
                            logits,
                            ids,
                            first + i,
                            rows,
                            features,
                            self.space_id,
                            self.glue,
                            allowed,
                        )
                        ids = tf.where(i < n_forced, forced[:, i], drawn)
                    else:
                        _, state = steps.step(ids, state, prepared)
                        ids = forced[:, i]
                    if lexer is not None:
                        lex = lexer.advance(lex, ids)
                    out = out.write(i, ids)
                return tf.transpose(out.stack()), ids, state, lex  # (N, CHUNK), (N,), ...

            # The concrete function of the one signature every call has: calling it
            # skips tf.function's per-call matching of its arguments, which costs as
            # much as a good part of a small model's chunk.
            def spec(structure):
                return tf.nest.map_structure(
                    lambda t: tf.TensorSpec(np.shape(t), tf.as_dtype(t.dtype)), structure
                )

            n = self.batch
            lex_spec = spec(lexer.initial(n)) if lexer is not None else ()
            signature = [
                tf.TensorSpec([n], tf.int32),
                spec(state),
                lex_spec,
                tf.TensorSpec([n, CHUNK], tf.int32),
                tf.TensorSpec([n, 3], tf.int32),
                tf.TensorSpec([n, 4], tf.int32),
                tf.TensorSpec([n, 2], tf.float32),
                tf.TensorSpec([n], tf.int64),
            ]
            self._compiled[key] = tf.function(chunk, jit_compile=self._jit).get_concrete_function(
                *signature
            )
        return self._compiled[key]

    def _lexer(self):
        """The constraint's lexer (its rules as tensors; the state is each row's)."""
        from kerasgen.python_lexer import PythonLexer

        if self._lex_rules is None:
            self._lex_rules = PythonLexer(self.vocab)
        return self._lex_rules

    def graph_generate(
        self, prefix, lengths, n, seed, temperature, options: SamplingOptions = SamplingOptions()
    ):
        """The whole of ``stream_ids`` in TensorFlow ops, one prefix per row (for an
        exported model): ids (N, n) of ``n`` tokens after each row's prefix.

        ``prefix`` (N, L) int32, row r's prefix left-aligned in its first
        ``lengths[r]`` >= 1 places; ``n``, ``seed``, ``temperature``: scalar
        tensors. Draws are those of ``stream_ids`` for the same prefix and
        seed (generation index g of row r uses the uniform of (seed, g, r)).
        A recurrent model needs ``fused``; the others a model built for any batch.
        """
        from kerasgen.families import RecurrentSteps, WindowSteps

        tf = self._tf
        steps = self.steps
        batch = tf.shape(prefix)[0]
        last = tf.gather(prefix, lengths - 1, batch_dims=1)
        if isinstance(steps, WindowSteps):
            # The window holds what comes before the last prefix token.
            context = steps.context
            before = tf.minimum(lengths - 1, context)  # (N,)
            src = (lengths - 1 - before)[:, None] + tf.range(context)[None, :]  # (N, C)
            valid = tf.range(context)[None, :] < before[:, None]
            src = tf.minimum(src, tf.shape(prefix)[1] - 1)
            window = tf.where(valid, tf.gather(prefix, src, batch_dims=1), 0)
            state, read, ids = (window, before), tf.ones_like(lengths), last
        elif isinstance(steps, RecurrentSteps):
            state, read, ids = steps.zeros(batch), lengths, prefix[:, 0]
        else:  # a bigram: only the last token matters
            state, read, ids = steps.zeros(batch), tf.ones_like(lengths), last
        prepared = steps.prepare()
        # Row r reads its first read[r] tokens, then draws; the loop runs until the
        # row with the longest prefix has drawn n.
        total = tf.reduce_max(read) - 1 + n
        out = tf.TensorArray(tf.int32, size=total)
        width = tf.shape(prefix)[1]
        for k in tf.range(total):
            logits, state = steps.step(ids, state, prepared)
            drawn = select_next(
                logits, ids, k + 1 - read, seed, temperature, options, self.space_id, self.glue
            )
            forced = tf.gather(prefix, tf.minimum(k + 1, width - 1)[None], axis=1)[:, 0]
            ids = tf.where(k + 1 < read, forced, drawn)
            out = out.write(k, ids)
        taken = tf.transpose(out.stack())  # (N, total)
        columns = (read - 1)[:, None] + tf.range(n)[None, :]  # (N, n)
        return tf.gather(taken, columns, batch_dims=1)

    def rows(self) -> Rows:
        """The N rows, free, for streams that come and go (``Rows``)."""
        return Rows(self.batch, lambda size: self)

    def stream_ids(self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions()):
        """Yield the ids of ``n`` new tokens after ``prime`` in pieces of shape (N, k): one
        request on all N rows (row r is sample r).

        Each call is a stream of its own: its state lives in this generator, so
        streams of one sampler may be read in any interleaving. With
        ``options.constrain`` the lexer reads the prime (not the preamble) and
        every token drawn keeps to its rules.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rows = Rows(self.batch, lambda size: self, one_request=True)
        for r in range(self.batch):
            rows.join(r, prime, options, index=r)
        made = 0
        while made < n:
            taken = rows.run()  # every row has the same prefix: the same start
            new = taken.ids[:, taken.start[0] :][:, : n - made]
            if new.shape[1]:
                made += new.shape[1]
                yield new

    def generate_ids(
        self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions()
    ) -> np.ndarray:
        """Ids of ``n`` new tokens after ``prime`` for each of the N streams: (N, n)."""
        pieces = list(self.stream_ids(n, prime, options))
        return np.concatenate(pieces, axis=1) if pieces else np.zeros((self.batch, 0), np.int32)

    def stream(
        self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions(), stop=()
    ):
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

    def generate(
        self, n: int, prime: str = "", options: SamplingOptions = SamplingOptions(), stop=()
    ) -> list[str]:
        """The prime followed by the generated text, one string per stream."""
        texts = [[] for _ in range(self.batch)]
        for pieces in self.stream(n, prime, options, stop):
            for text, piece in zip(texts, pieces):
                text.append(piece)
        return ["".join(text) for text in texts]


@dataclass
class Taken:
    """What one chunk took: ids (N, CHUNK), and per row the column where its generated
    ids begin (CHUNK: the whole chunk was its prefix)."""

    ids: np.ndarray
    start: np.ndarray


class Rows:
    """Rows of streams, each its own: its prefix still to read, its state, its settings.

    ``join`` starts a stream in a free row (it begins at the next chunk while the
    other rows go on: continuous batching), ``leave`` frees it, ``move`` packs a
    stream into a lower row; ``run`` advances every stream one chunk. Each chunk
    runs on the smallest batch, among ``sizes``, that holds every row up to the
    highest one in use (``sampler_for(size)``: a ``Sampler`` built at that batch),
    so a lone stream runs at the speed of one.
    """

    def __init__(self, capacity: int, sampler_for, sizes=None, one_request: bool = False):
        import tensorflow as tf

        # one_request: every row is a sample of one request (``Sampler.stream_ids``), so
        # the loop may compute the settings they share once. Rows that come and go keep
        # the per-row loop: one compiled loop per batch size, whoever joins.
        self.capacity, self.sampler_for, self.one_request = capacity, sampler_for, one_request
        self.sizes = sorted(set(sizes or [capacity]) | {capacity})
        sampler = sampler_for(self.sizes[0])
        self.steps, self.vocab, self.preamble = sampler.steps, sampler.vocab, sampler.preamble
        self._lexer = sampler._lexer
        self.state = self.steps.zeros(capacity)
        self.lex = None  # the lexer's state, made when a constrained row first joins
        self.ids = tf.zeros((capacity,), tf.int32)  # the id each row reads next
        self.pending = [np.zeros(0, np.int32)] * capacity  # prefix ids still to read
        self.gen = np.zeros(capacity, np.int32)  # generation index of the next chunk's step 0
        self.lex_start = np.zeros(capacity, np.int32)
        self.options = [None] * capacity  # None: a free row
        self.settings = row_settings(SamplingOptions(), capacity)
        self._plan = None  # the batch size, rows, features and settings of the next chunk
        self._reading = False  # whether any row still has a prefix to read
        self._no_prefix = {}  # size -> the forced ids when no row reads a prefix

    @property
    def free(self) -> list[int]:
        return [r for r, o in enumerate(self.options) if o is None]

    @property
    def active(self) -> list[int]:
        return [r for r, o in enumerate(self.options) if o is not None]

    def join(self, row: int, prime: str, options: SamplingOptions, index: int = 0) -> None:
        """Start a stream in ``row``: ``prime`` after the preamble, drawn with ``options``
        as sample ``index`` of its request (row ``index`` of ``kerasgen sample``)."""
        import tensorflow as tf

        prefix = prefix_ids(self.vocab, self.preamble, prime)
        first, forced, state = self.steps.start(prefix)
        self.state = tf.nest.map_structure(
            lambda all_, one: _set_row(all_, row, one), self.state, state
        )
        self.ids = _set_row(self.ids, row, tf.constant([first], tf.int32))
        self.pending[row] = forced
        self.gen[row] = -len(forced)
        # The generation index of the prime's first token, were it taken in the loop.
        self.lex_start[row] = -len(prime)
        if options.constrain:
            lexer = self._lexer()
            if self.lex is None:
                self.lex = lexer.initial(self.capacity)
            # A constraint implies a character-level run: one id per character. The lexer
            # reads the prime's ids that the loop will not take (a recurrent model's
            # first id; all of them for the other models).
            unread = prefix[len(prefix) - len(prime) : len(prefix) - len(forced)]
            one = lexer.initial(1)
            if len(unread):
                one = lexer.read(one, unread[None, :])
            self.lex = tf.nest.map_structure(lambda all_, o: _set_row(all_, row, o), self.lex, one)
        for name, values in row_settings(options, 1, index).items():
            self.settings[name][row] = values[0]
        self.options[row] = options
        self._plan, self._reading = None, self._reading or bool(len(forced))

    def leave(self, row: int) -> None:
        """Free ``row``: its stream ended."""
        self.options[row] = None
        self._plan = None

    def move(self, src: int, dst: int) -> None:
        """Carry the stream in row ``src`` on in the free row ``dst``."""
        import tensorflow as tf

        def copy(t):
            return _set_row(t, dst, t[src : src + 1])

        self.state, self.ids = tf.nest.map_structure(copy, (self.state, self.ids))
        if self.lex is not None:
            self.lex = tf.nest.map_structure(copy, self.lex)
        for values in (self.gen, self.lex_start, *self.settings.values()):
            values[dst] = values[src]
        self.pending[dst], self.options[dst] = self.pending[src], self.options[src]
        self.leave(src)

    def run(self) -> Taken:
        """One chunk of every row up to the highest one in use; what each took (rows
        above it took nothing: an empty ``Taken.ids`` row)."""
        import tensorflow as tf

        if self._plan is None:  # what the rows need, until one joins or leaves
            active = self.active
            size = next(s for s in self.sizes if s > (active[-1] if active else 0))
            # One request on every row (kerasgen sample): one seed, temperature and step.
            # (A lone row always shares its own: one loop at size 1, whoever it is.)
            shared = size == 1 or (
                self.one_request
                and size == len(active)
                and len({self.gen[r] for r in active}) == 1
                and all(len(set(v[:size])) == 1 for k, v in self.settings.items() if k != "row")
            )
            self._plan = (
                size,
                active,
                SamplingOptions.union([self.options[r].features for r in active], shared),
                self.packed(size),
            )
        size, active, features, settings = self._plan
        forced, n_forced = self._forced(size)
        # A chunk of prefixes only (long primes) draws nothing: a cheaper loop.
        draw = not n_forced.any() or any(n_forced[r] < CHUNK for r in active)
        head, ids = _head(self.state, size), _head(self.ids, size)
        chunk = self.sampler_for(size)._chunk_fn(features, head, draw)
        lex = _head(self.lex, size) if features[3] else ()
        counters = np.stack([n_forced, self.gen[:size], self.lex_start[:size]], axis=1)
        out, ids, head, lex = chunk(ids, head, lex, forced, tf.constant(counters), *settings)
        self.state, self.ids = _put_head(self.state, head), _put_head(self.ids, ids)
        if features[3]:
            self.lex = _put_head(self.lex, lex)
        self.gen[:size] += CHUNK
        return Taken(out.numpy(), n_forced)

    def packed(self, size: int) -> tuple:
        """The settings of the first ``size`` rows as the compiled loop takes them:
        (mode, top_k, row, constrained) int32 (size, 4), (temperature, top_p) float32
        (size, 2), seed int64 (size,)."""
        import tensorflow as tf

        s = {k: v[:size] for k, v in self.settings.items()}
        return (
            tf.constant(
                np.stack(
                    [s["mode"], s["top_k"], s["row"], s["constrained"].astype(np.int32)], axis=1
                )
            ),
            tf.constant(np.stack([s["temperature"], s["top_p"]], axis=1)),
            tf.constant(s["seed"]),
        )

    def _forced(self, size: int):
        """The next CHUNK of each row's prefix still to read: (forced ids (size, CHUNK), a
        tensor, and how many of each row's are forced (size,))."""
        import tensorflow as tf

        n_forced = np.zeros(size, np.int32)
        if not self._reading:
            if size not in self._no_prefix:
                self._no_prefix[size] = tf.zeros((size, CHUNK), tf.int32)
            return self._no_prefix[size], n_forced
        forced = np.zeros((size, CHUNK), np.int32)
        for r in range(size):
            pending = self.pending[r]
            if len(pending):
                n_forced[r] = min(len(pending), CHUNK)
                forced[r, : n_forced[r]] = pending[:CHUNK]
                self.pending[r] = pending[CHUNK:]
        self._reading = any(len(p) for p in self.pending)
        return tf.constant(forced), n_forced


def _head(batched, size: int):
    """The first ``size`` rows of every tensor of ``batched`` (itself when that is all)."""
    import tensorflow as tf

    if tf.nest.flatten(batched)[0].shape[0] == size:
        return batched
    return tf.nest.map_structure(lambda t: t[:size], batched)


def row_settings(options: SamplingOptions, batch: int, index=None) -> dict:
    """``select_rows``'s row settings, each (batch,), every row with ``options``; "row" is
    each one's sample index (0..batch-1, or ``index`` for all)."""
    return {
        "seed": np.full(batch, options.seed, np.int64),
        "row": np.arange(batch, dtype=np.int32)
        if index is None
        else np.full(batch, index, np.int32),
        "temperature": np.full(batch, options.temperature, np.float32),
        "mode": np.full(batch, options.sample, np.int32),
        "top_k": np.full(batch, options.top_k, np.int32),
        "top_p": np.full(batch, options.top_p, np.float32),
        "constrained": np.full(batch, options.constrain is not None),
    }


def _put_head(full, head):
    """``full`` (C, ...) with its first rows replaced by ``head`` (k, ...)."""
    import tensorflow as tf

    if tf.nest.flatten(head)[0].shape[0] == tf.nest.flatten(full)[0].shape[0]:
        return head
    return tf.nest.map_structure(lambda f, h: tf.concat([h, f[h.shape[0] :]], axis=0), full, head)


def _set_row(batched, row: int, one):
    """``batched`` (N, ...) with row ``row`` replaced by ``one`` (1, ...)."""
    import tensorflow as tf

    if batched.shape[1:].num_elements() == 0:  # nothing per row (a bigram)
        return batched
    return tf.tensor_scatter_nd_update(batched, [[row]], tf.cast(one, batched.dtype))


def _where_rows(mask, a, b):
    """``tf.where`` of a per-row ``mask`` (N,) over tensors (N, ...) of any rank."""
    import tensorflow as tf

    return tf.where(tf.reshape(mask, [-1] + [1] * (len(a.shape) - 1)), a, b)


def generate_reference(
    model,
    vocab,
    n: int,
    prime: str = "",
    options: SamplingOptions = SamplingOptions(),
    preamble: str = "",
) -> np.ndarray:
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
        ids = select_next(
            logits, ids, step, options.seed, options.temperature, options, space_id, glue
        ).numpy()
        out[:, step] = ids
        seen = np.concatenate([seen, ids[:, None]], axis=1)
    return out
