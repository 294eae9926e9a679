"""The exact Python constraint on the sampler's rows: each chunk's text checked as it comes.

The compiled loop draws under ``kerasgen.python_lexer`` (Python's tokenizer and the
start of its parser, as tensors). After each chunk, ``RowChecks.review`` reads each
constrained row's new characters with ``kerasgen.python_prefix`` (the whole
grammar and the compiler's rules, on the host). At the first character that no
module allows, the row goes back: the next chunk reads the characters before it
again (forced, from the state the chunk began with) and draws that position
anew, with every character no module allows there banned (``banned``, ``ban_at``:
the compiled loop takes them with the lexer's state; the host reads each character
of the vocabulary from that position to find them). The draw keeps its place in
the seeded sequence (the same generation index, so the same uniform), so a row's
text is still one function of its seed, and it comes from the model's distribution
renormalised over the characters allowed there.

Where no character is allowed (a text the reader let through that no module
begins with; it should not happen), the row steps back one character and bans
the one it drew there too; when it cannot step back within the chunk, the row is
read unchecked from there on (counted in ``counts["unchecked"]``).
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
