"""The exact Python constraint on the sampler's rows: each chunk's text checked as it comes.

The compiled loop draws under ``kerasgen.python_lexer`` (Python's tokenizer and the
start of its parser, as tensors). After each chunk, ``RowChecks.review`` reads each
constrained row's new characters with ``kerasgen.python_prefix`` (the whole
grammar and the compiler's rules, on the host). At the first character that no
module allows, the row goes back: its next chunk resumes from where the row stood
before that character (``review_rows``; each exact chunk returns a trail of where
every row stood before each step, and ``restored`` takes a row from it) and draws
that position anew, with every character no module allows there banned (``banned``, ``ban_at``:
the compiled loop takes them with the lexer's state; the host reads each character
of the vocabulary from that position to find them). The draw keeps its place in
the seeded sequence (the same generation index, so the same uniform), so a row's
text is still one function of its seed, and it comes from the model's distribution
renormalised over the characters allowed there.

Where no character is allowed (a text the reader let through that no module
begins with; it should not happen), the row steps back one character and bans
the one it drew there too; when it cannot step back within the chunk, the row is
read unchecked from there on (counted in ``counts["unchecked"]``).

The TensorFlow helpers here (``restored``, ``trail_zeros``, ``unbanned``, ``where_rows``)
import TensorFlow when called.
"""

from __future__ import annotations

import numpy as np

from kerasgen.python_prefix import PythonPrefix

NO_BAN = -(2**30)  # ban_at of a row with nothing banned


class RowChecks:
    """Each row's ``PythonPrefix`` (None: not checked) and the characters banned at its
    next draw."""

    def __init__(self, vocab, capacity: int):
        self.chars = [vocab.decode([i]) for i in range(len(vocab))]
        self.prefix: list[PythonPrefix | None] = [None] * capacity
        self.history = [{} for _ in range(capacity)]  # position -> banned, this chunk
        self.ban_at = np.full(capacity, NO_BAN, np.int32)
        self.banned = np.zeros((capacity, len(self.chars)), bool)
        self.counts = {"refused": 0, "stepped_back": 0, "unchecked": 0}
        self._masks = {}  # PythonPrefix.key() -> _allowed (states recur: after ")", ...)

    def join(self, row: int, prime: str, constrained: bool) -> None:
        """Check row ``row`` from ``prime`` on (not when the prime itself begins no module:
        the loop's lexer alone constrains it then)."""
        self.prefix[row] = PythonPrefix().read(prime) if constrained else None
        self._unban(row)

    def move(self, src: int, dst: int) -> None:
        self.prefix[dst], self.ban_at[dst] = self.prefix[src], self.ban_at[src]
        self.banned[dst] = self.banned[src]
        self.history[dst] = self.history[src]
        self.prefix[src] = None
        self._unban(src)

    def _unban(self, row: int) -> None:
        self.history[row] = {}
        self.ban_at[row] = NO_BAN
        self.banned[row] = False

    def review(self, row: int, ids: np.ndarray, start: int, gen0: int) -> int | None:
        """Read row ``row``'s ids from column ``start`` (generation index ``gen0`` at
        column 0); the column to draw again from, or None when every one is allowed."""
        state = self.prefix[row]
        if state is None:
            return None
        kept = {at: b for at, b in self.history[row].items() if at >= gen0}
        self.history[row] = kept  # bans of this chunk's positions, kept while it is redrawn
        before = []  # the state before each column from start
        for col in range(start, len(ids)):
            new = state.feed(self.chars[ids[col]])
            if new is None:
                return self._refused(row, ids, col, start, gen0, before + [state])
            before.append(state)
            state = new
        self.prefix[row] = state
        self._unban(row)
        return None

    def _refused(self, row, ids, col, start, gen0, before) -> int | None:
        """Ban at ``col`` every character no module allows there, and those refused there
        before; where that leaves none, step back one and ban the one drawn there too.
        The column to redraw (None: the row goes on unchecked)."""
        self.counts["refused"] += 1
        history = self.history[row]
        while True:
            at = gen0 + col
            allowed = self._allowed(before[col - start])
            allowed[ids[col]] = False
            if at in history:
                allowed &= ~history[at]
            if allowed.any():
                break
            # Nothing left here (a text the reader let through that no module begins
            # with): the character before is where it went wrong.
            self.counts["stepped_back"] += 1
            col -= 1
            if col < start:
                self.counts["unchecked"] += 1
                self.prefix[row] = None
                self._unban(row)
                return None
        history[at] = ~allowed
        self.ban_at[row], self.banned[row] = at, ~allowed
        self.prefix[row] = before[col - start]
        return col

    def _allowed(self, state: PythonPrefix) -> np.ndarray:
        """(V,) bool: the characters ``state`` may read next (a copy)."""
        key = state.key()
        if key not in self._masks:
            if len(self._masks) > 10_000:
                self._masks.clear()
            self._masks[key] = np.array([state.feed(c) is not None for c in self.chars])
        return self._masks[key].copy()


def review_rows(rows, taken, active, gen) -> None:
    """After a chunk of ``kerasgen.sampler.Rows`` (``taken``: its ``Taken``), each checked
    row's new ids read (``gen``: the generation index of each row's column 0); a row with a
    refused one resumes at its next chunk where it was refused (``rows.back``), to draw
    there anew."""
    for r in active:
        col = rows.checks.review(r, taken.ids[r], int(taken.start[r]), int(gen[r]))
        if col is not None:
            taken.end[r], rows.back[r], rows.gen[r] = col, col, gen[r] + col


def restored(back, trail, now):
    """``now`` (ids, model state, lexer state; each (N, ...)) with each row whose ``back``
    is not -1 taken from ``trail`` (the same, each (length + 1, N, ...): where the rows
    stood before each step of a chunk, and after its last) at that step."""
    import tensorflow as tf

    use = back >= 0
    at = tf.stack([tf.maximum(back, 0), tf.range(tf.shape(back)[0])], axis=1)
    return tf.nest.map_structure(lambda t, n: where_rows(use, tf.gather_nd(t, at), n), trail, now)


def trail_zeros(now, length: int):
    """A trail of ``length`` steps for ``now``'s tensors, all zeros (no row resumes)."""
    import tensorflow as tf

    return tf.nest.map_structure(lambda t: tf.zeros([length + 1, *t.shape], t.dtype), now)


def unbanned(allowed, banned, now):
    """``allowed`` (N, V) less each row's ``banned`` ids where ``now`` (N,). Never nothing:
    a row the lexer and the bans leave nothing draws from what the bans leave (the exact
    reader's choice), and from every id if they leave nothing either."""
    import tensorflow as tf

    banned &= now[:, None]
    left = allowed & ~banned
    left = tf.where(tf.reduce_any(left, axis=1, keepdims=True), left, ~banned)
    return left | ~tf.reduce_any(left, axis=1, keepdims=True)


def where_rows(mask, a, b):
    """``tf.where`` of a per-row ``mask`` (N,) over tensors (N, ...) of any rank."""
    import tensorflow as tf

    return tf.where(tf.reshape(mask, [-1] + [1] * (len(a.shape) - 1)), a, b)
