"""The generation loop: ``Sampler`` runs it, ``Rows`` holds each stream's place in it.

``Sampler`` runs the per-token loop inside one compiled ``tf.function`` (XLA on
by default), ``CHUNK`` tokens per call; the chunk size is fixed, so neither
``n`` nor the prime's length ever recompiles. The model's family comes in as a
step provider (``kerasgen.families``): its state, one step, and how a prime is
read (a recurrent model reads its prefix in the loop, forced instead of drawn;
a transformer's goes straight into its sliding window; a bigram reads only the
last token). The state goes into each compiled call and comes out of it:
``Rows`` holds it per row, with each row's prime, seed and settings, so streams
never share state and a server's streams can join and leave a running batch.

A constraint (``SamplingOptions.constrain``: ``kerasgen.python_lexer``) is a
lexer that runs in the same loop: it reads every token taken from the prime on,
and each draw comes from the model's distribution renormalised over the tokens
it allows next (``select_rows``). With ``"python"`` (not ``"python-tokens"``),
``Rows`` also reads each constrained row's chunk on the host
(``kerasgen.python_check``) and sends a row back to draw again where its text
stopped beginning a module; such chunks are ``CONSTRAINED_CHUNK`` long.

``kerasgen.reference.generate_reference`` is the plain step-by-step version of the
same procedure, kept as the definition the fast path is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerasgen import checks
from kerasgen.python_check import restored, review_rows, trail_zeros, unbanned, where_rows
from kerasgen.sampling import (
    SamplingOptions,
    glue_rule,
    seed_keys,
    select_rows,
    space_id,
)
from kerasgen.streams import prefix_ids

CHUNK = 128  # tokens per compiled call
# ... for rows the exact constraint reads (kerasgen.python_check), which it sends back to
# draw a refused position again: the rest of their chunk is thrown away.
CONSTRAINED_CHUNK = 32


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
        self.space_id = space_id(vocab)
        self.glue = glue_rule(vocab)
        self._jit = jit_compile
        self._compiled = {}  # see _chunk_fn's key -> compiled chunk function
        self._lex_rules = None  # the constraint's lexer (_lexer)
        self._tf = tf

    def _chunk_fn(self, features: tuple, state, draw: bool = True, exact: bool = False):
        """The compiled loop of CHUNK steps (``exact``: CONSTRAINED_CHUNK, and the bans of
        the exact constraint applied) for rows that need ``features``.

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
        key = ((features, True) if draw else (constrain, False)) + (exact,)
        if key not in self._compiled:
            lexer = self._lexer() if constrain else None
            length = CONSTRAINED_CHUNK if exact else CHUNK
            chunk = self._chunk(features, draw, lexer, length, exact)
            chunk = self._tf.function(chunk, jit_compile=self._jit)
            # The concrete function of the one signature every call has: calling it
            # skips tf.function's per-call matching of its arguments, which costs as
            # much as a good part of a small model's chunk.
            signature = self._signature(state, lexer, length, exact)
            self._compiled[key] = chunk.get_concrete_function(*signature)
        return self._compiled[key]

    def _chunk(self, features: tuple, draw: bool, lexer, length: int, exact: bool):
        """The Python function ``_chunk_fn`` compiles."""
        tf, steps = self._tf, self.steps

        def chunk(ids, state, lex, forced, counters, ints, floats, seeds):
            n_forced, gen_start, lex_start = tf.unstack(counters, axis=1)
            rows = _unpacked(ints, floats, seeds)
            prepared = steps.prepare()  # e.g. the fused weights, once per call
            # Once per call, not at every step (scalars when the rows share them).
            first = gen_start[0] if features[5] else gen_start
            rows["key"] = seed_keys(rows["seed"][0] if features[5] else rows["seed"])
            fresh = lexer.initial(self.batch) if lexer is not None else ()
            if lexer is not None:
                packed, ban_at, banned = lex[:3]
            trail = []  # exact: where each row stood before each step, and after the last
            if exact:  # rows sent back resume where they were refused (lex[3], lex[4])
                ids, state, packed = restored(lex[3], lex[4], (ids, state, packed))
                trail = [
                    tf.TensorArray(t.dtype, size=length + 1).write(0, t)
                    for t in tf.nest.flatten((ids, state, packed))
                ]
            if lexer is not None:
                lex = lexer.unpack(packed)
            out = tf.TensorArray(tf.int32, size=length)
            for i in tf.range(length):
                if lexer is not None:
                    restart = gen_start + i == lex_start
                    lex = tf.nest.map_structure(
                        lambda a, b, r=restart: where_rows(r, a, b), fresh, lex
                    )
                if draw:
                    allowed = None
                    if lexer is not None:
                        allowed = lexer.allowed(lex)
                        if exact:
                            allowed = unbanned(allowed, banned, gen_start + i == ban_at)
                        allowed |= ~rows["constrained"][:, None]
                    logits, state = steps.step(ids, state, prepared)
                    drawn = select_rows(
                        logits, ids, first + i, rows, features, self.space_id, self.glue, allowed
                    )
                    if exact:  # for the rows of the exact constraint only
                        drawn = _line_end(
                            lexer, lex, logits, ids, first + i, rows, features, self, allowed, drawn
                        )
                    ids = tf.where(i < n_forced, forced[:, i], drawn)
                else:
                    _, state = steps.step(ids, state, prepared)
                    ids = forced[:, i]
                if lexer is not None:
                    lex = lexer.advance(lex, ids)
                if exact:  # where each row stands after step i, to resume from
                    now = tf.nest.flatten((ids, state, lexer.pack(lex)))
                    trail = [t.write(i + 1, a) for t, a in zip(trail, now)]
                out = out.write(i, ids)
            if lexer is not None:
                lex = lexer.pack(lex)
            if exact:
                trail = tf.nest.pack_sequence_as((ids, state, lex), [t.stack() for t in trail])
            else:
                trail = ()
            # (N, CHUNK), (N,), state, lexer state, (ids, state, lex) before each step
            return tf.transpose(out.stack()), ids, state, lex, trail

        return chunk

    def _signature(self, state, lexer, length: int, exact: bool) -> list:
        """The input specs of every call of a chunk at this batch size."""
        tf, n = self._tf, self.batch

        def spec(structure):
            return tf.nest.map_structure(
                lambda t: tf.TensorSpec(np.shape(t), tf.as_dtype(t.dtype)), structure
            )

        lex = ()
        if lexer is not None:  # the lexer's state, and the ids banned at one step
            packed = lexer.pack(lexer.initial(n))
            lex = (spec(packed), tf.TensorSpec([n], tf.int32))
            lex += (tf.TensorSpec([n, len(self.vocab)], tf.bool),)
            if exact:  # where rows resume, and the last exact chunk's trail
                trail = spec(trail_zeros((tf.zeros([n], tf.int32), state, packed), length))
                lex += (tf.TensorSpec([n], tf.int32), trail)
        return [
            tf.TensorSpec([n], tf.int32),
            spec(state),
            lex,
            tf.TensorSpec([n, length], tf.int32),
            tf.TensorSpec([n, 3], tf.int32),
            tf.TensorSpec([n, 4], tf.int32),
            tf.TensorSpec([n, 2], tf.float32),
            tf.TensorSpec([n], tf.int64),
        ]

    def _lexer(self):
        """The constraint's lexer (its rules as tensors; the state is each row's)."""
        from kerasgen.python_lexer import PythonLexer

        if self._lex_rules is None:
            self._lex_rules = PythonLexer(self.vocab)
        return self._lex_rules

    def rows(self) -> Rows:
        """The N rows, free, for streams that come and go (``Rows``)."""
        return Rows(self.batch, lambda size: self)

    def stream_ids(self, n: int, prime: str = "", options: SamplingOptions | None = None):
        """Yield the ids of ``n`` new tokens after ``prime`` in pieces of shape (N, k): one
        request on all N rows (row r is sample r).

        Each call is a stream of its own: its state lives in this generator, so
        streams of one sampler may be read in any interleaving. With
        ``options.constrain`` the lexer reads the prime (not the preamble) and
        every token drawn keeps to its rules.
        """
        checks.at_least("n", n, 0)
        options = options or SamplingOptions()
        rows = Rows(self.batch, lambda size: self, one_request=True)
        for r in range(self.batch):
            rows.join(r, prime, options, index=r)
        made, held = 0, [np.zeros(0, np.int32)] * self.batch
        while made < n:
            # Rows go on by the same count unless the exact constraint sends one back.
            taken = rows.run()
            held = [np.concatenate([h, taken.new(r)]) for r, h in enumerate(held)]
            k = min(min(len(h) for h in held), n - made)
            if k:
                made += k
                yield np.stack([h[:k] for h in held])
                held = [h[k:] for h in held]

    def generate_ids(
        self, n: int, prime: str = "", options: SamplingOptions | None = None
    ) -> np.ndarray:
        """Ids of ``n`` new tokens after ``prime`` for each of the N streams: (N, n)."""
        pieces = list(self.stream_ids(n, prime, options))
        return np.concatenate(pieces, axis=1) if pieces else np.zeros((self.batch, 0), np.int32)


@dataclass
class Taken:
    """What one chunk took: ids (N, length), and per row the columns where its generated
    ids begin (length: the whole chunk was its prefix) and end (before length: the exact
    constraint sent the row back there, ``kerasgen.python_check``)."""

    ids: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def new(self, row: int) -> np.ndarray:
        """The ids row ``row`` generated in the chunk."""
        return self.ids[row, self.start[row] : self.end[row]]


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
        self.checks = None  # the exact constraint's RowChecks, made with self.lex
        # Rows the exact constraint sent back resume at step back[r] of the last chunk's
        # trail (-1: none; see python_check.review_rows).
        self.back, self.trail, self._no_trail = np.full(capacity, -1, np.int32), None, {}
        self.ids = tf.zeros((capacity,), tf.int32)  # the id each row reads next
        self.pending = [np.zeros(0, np.int32)] * capacity  # prefix ids still to read
        self.gen = np.zeros(capacity, np.int32)  # generation index of the next chunk's step 0
        self.lex_start = np.zeros(capacity, np.int32)
        self.options = [None] * capacity  # None: a free row
        self.settings = row_settings(SamplingOptions(), capacity)
        self._plan = None  # the batch size, rows, features and settings of the next chunk
        self._reading = False  # whether any row still has a prefix to read
        self._no_prefix = {}  # (size, length) -> the forced ids when no row reads a prefix

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
                from kerasgen.python_check import RowChecks

                self.lex = lexer.pack(lexer.initial(self.capacity))
                self.checks = RowChecks(self.vocab, self.capacity)
            # A constraint implies a character-level run: one id per character. The lexer
            # reads the prime's ids that the loop will not take (a recurrent model's
            # first id; all of them for the other models).
            unread = prefix[len(prefix) - len(prime) : len(prefix) - len(forced)]
            one = lexer.initial(1)
            if len(unread):
                one = lexer.read(one, unread[None, :])
            one = lexer.pack(one)
            self.lex = tf.nest.map_structure(lambda all_, o: _set_row(all_, row, o), self.lex, one)
        if self.checks is not None:
            self.checks.join(row, prime, options.constrain == "python")
        for name, values in row_settings(options, 1, index).items():
            self.settings[name][row] = values[0]
        self.options[row] = options
        self._plan, self._reading = None, self._reading or bool(len(forced))

    def leave(self, row: int) -> None:
        """Free ``row``: its stream ended."""
        self.options[row] = None
        self.back[row] = -1
        self._plan = None

    def move(self, src: int, dst: int) -> None:
        """Carry the stream in row ``src`` on in the free row ``dst``."""
        import tensorflow as tf

        def copy(t):
            return _set_row(t, dst, t[src : src + 1])

        _settle(self)

        self.state, self.ids = tf.nest.map_structure(copy, (self.state, self.ids))
        if self.lex is not None:
            self.lex = tf.nest.map_structure(copy, self.lex)
        for values in (self.gen, self.lex_start, *self.settings.values()):
            values[dst] = values[src]
        if self.checks is not None:
            self.checks.move(src, dst)
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
            # (Not for rows the exact constraint reads: it sends rows back one by one.)
            shared = size == 1 or (
                self.one_request
                and size == len(active)
                and not any(self.options[r].constrain == "python" for r in active)
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
        # Rows the exact constraint reads resume where it refused a draw, to draw again:
        # shorter chunks waste fewer steps.
        exact = self.checks is not None and any(self.checks.prefix[r] is not None for r in active)
        length = CONSTRAINED_CHUNK if exact else CHUNK
        forced, n_forced = self._forced(size, length)
        # A chunk of prefixes only (long primes) draws nothing: a cheaper loop.
        draw = not n_forced.any() or any(n_forced[r] < length for r in active)
        head, ids = _head(self.state, size), _head(self.ids, size)
        chunk = self.sampler_for(size)._chunk_fn(features, head, draw, exact)
        lex = ()
        if features[3]:
            checks = self.checks
            bans = (tf.constant(checks.ban_at[:size]), tf.constant(checks.banned[:size]))
            lex = (_head(self.lex, size), *bans)
            if exact:
                lex += _resume(self, size, ids, head, lex[0])
        counters = np.stack([n_forced, self.gen[:size], self.lex_start[:size]], axis=1)
        gen = self.gen.copy()
        out, ids, head, lex, trail = chunk(ids, head, lex, forced, tf.constant(counters), *settings)
        self.state, self.ids = _put_head(self.state, head), _put_head(self.ids, ids)
        if features[3]:
            self.lex = _put_head(self.lex, lex)  # the lexer's state (the bans stay here)
        self.gen[:size] += length
        taken = Taken(out.numpy(), n_forced, np.full(size, length))
        if exact:
            self.trail, self.back[:] = trail, -1
            review_rows(self, taken, active, gen)
        return taken

    def packed(self, size: int) -> tuple:
        """The settings of the first ``size`` rows as the compiled loop takes them:
        (mode, top_k, row, constrained) int32 (size, 4), (temperature, top_p) float32
        (size, 2), seed int64 (size,)."""
        import tensorflow as tf

        s = {k: v[:size] for k, v in self.settings.items()}
        return (
            tf.constant(np.stack([s["mode"], s["top_k"], s["row"], s["constrained"]], axis=1)),
            tf.constant(np.stack([s["temperature"], s["top_p"]], axis=1)),
            tf.constant(s["seed"]),
        )

    def _forced(self, size: int, length: int):
        """The next ``length`` ids of each row's prefix still to read: (forced ids (size,
        length), a tensor, and how many of each row's are forced (size,))."""
        import tensorflow as tf

        n_forced = np.zeros(size, np.int32)
        if not self._reading:
            if (size, length) not in self._no_prefix:
                self._no_prefix[size, length] = tf.zeros((size, length), tf.int32)
            return self._no_prefix[size, length], n_forced
        forced = np.zeros((size, length), np.int32)
        for r in range(size):
            pending = self.pending[r]
            if len(pending):
                n_forced[r] = min(len(pending), length)
                forced[r, : n_forced[r]] = pending[:length]
                self.pending[r] = pending[length:]
        self._reading = any(len(p) for p in self.pending)
        return tf.constant(forced), n_forced


def _resume(rows: Rows, size: int, ids, state, lex) -> tuple:
    """Where the rows the exact constraint sent back resume: (back (size,), the last
    chunk's trail; ``kerasgen.python_check.restored``)."""
    import tensorflow as tf

    trail = rows.trail
    if trail is not None and tf.nest.flatten(trail)[0].shape[1] != size:
        _settle(rows)  # the batch changed size since: resume them here
        trail = None
    if trail is None or not (rows.back[:size] >= 0).any():
        if size not in rows._no_trail:
            rows._no_trail[size] = trail_zeros((ids, state, lex), CONSTRAINED_CHUNK)
        trail = rows._no_trail[size]
    return tf.constant(rows.back[:size]), trail


def _settle(rows: Rows) -> None:
    """Resume the rows sent back now (before rows move or the batch changes size)."""
    import tensorflow as tf

    if rows.trail is None or not (rows.back >= 0).any():
        return
    size = tf.nest.flatten(rows.trail)[0].shape[1]
    now = (_head(rows.ids, size), _head(rows.state, size), _head(rows.lex, size))
    ids, state, lex = restored(tf.constant(rows.back[:size]), rows.trail, now)
    rows.ids, rows.state = _put_head(rows.ids, ids), _put_head(rows.state, state)
    rows.lex, rows.back[:] = _put_head(rows.lex, lex), -1


def _line_end(lexer, lex, logits, ids, steps, rows, features, sampler, allowed, drawn):
    """``drawn``, except in constrained rows where the model's own draw (the same uniform,
    nothing masked) is a line break that cannot stand there: the character that ends what
    keeps the line open (``PythonLexer.closer``) where it is allowed. The model decides
    where a line ends; the constraint ends it the nearest way it allows, instead of
    drawing the line on."""
    import tensorflow as tf

    closer = lexer.closer(lex)
    closable = tf.gather(allowed, tf.maximum(closer, 0), batch_dims=1) & (closer >= 0)
    closable &= rows["exact"] & ~allowed[:, lexer.newline]

    def model_ends_line():  # the model's own draw, only when some row could be closed
        free = select_rows(logits, ids, steps, rows, features, sampler.space_id, sampler.glue)
        return tf.where(closable & (free == lexer.newline), closer, drawn)

    return tf.cond(tf.reduce_any(closable), model_ends_line, lambda: drawn)


def _unpacked(ints, floats, seeds) -> dict:
    """The per-row settings a chunk gets packed (few inputs: each binding costs a call),
    by name, as ``select_rows`` reads them (``Rows.packed`` packs them)."""
    return {
        "mode": ints[:, 0],
        "top_k": ints[:, 1],
        "row": ints[:, 2],
        "constrained": ints[:, 3] > 0,
        "exact": ints[:, 3] > 1,  # constrained by the exact constraint ("python")
        "temperature": floats[:, 0],
        "top_p": floats[:, 1],
        "seed": seeds,
    }


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
        # 0: none, 1: python-tokens, 2: python (the exact constraint)
        "constrained": np.full(
            batch, {None: 0, "python-tokens": 1}.get(options.constrain, 2), np.int32
        ),
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
