"""Python's rules as a sampling constraint: characters that would break them are never drawn.

(The compiled half of ``--constrain python``, and all of ``--constrain python-tokens``.)

A character model writing Python at temperature 1 slips somewhere in most long
blocks. ``PythonLexer`` follows the text as Python's tokenizer and the start of
its parser read it, one character per step, and masks the characters that
would make an error at that point; the sampler then draws from the model's
distribution renormalised over the characters left (``select_next``'s
``allowed``). What it rules out:

- lexical slips: a string left open at its line's end, a closing bracket that
  does not match the one open, a line indented where no block was opened (or
  not indented after a ``:``), a dedent to a column no enclosing block has, a
  number with a letter no literal holds (``28.readline``);
- a line that cannot end there: a compound statement (``if``, ``def``, ``try``
  ...) before its ``:``, a conditional expression before its ``else``, after
  ``=``, an operator, or a ``:`` that opens no block;
- a ``:`` a simple statement cannot have (after its ``=``, unless a lambda's;
  after anything but a name or subscript), a tuple as an ``if``/``while``
  condition, an ``=`` of its own in a statement that begins with a keyword
  (``if a = b``, ``return a = b``), anything but a name after an attribute's
  ``.``;
- a ``def`` or ``class`` header that is not ``def NAME(`` / ``class NAME``,
  parameters that do not begin with a name, ``*`` or ``/``, that go on after
  their name with anything but ``,`` ``)`` ``:`` ``=`` or whose default begins
  with ``=``, and a keyword as a function's, class's or parameter's name;
- two operands in a row (``x y``, ``f(a) b``): after a name that is not a
  keyword, a closing bracket or a string, a name must spell a word that may
  follow an operand there (``if``, ``in``, ``and`` ... anywhere; ``for`` in
  brackets; ``as``, ``import``, ``from`` in the statements that take them);
- a ``try`` body followed by anything but ``except`` or ``finally`` at the
  try's column (or a dedent past it), and ``else``, ``elif``, ``except``,
  ``finally`` after a statement that cannot take them, or an ``else`` after
  an operand with no ``if`` before it. A keyword the rules refuse does not
  end: it becomes a longer name.

It never forbids a character that Python accepts at that point, with one
exception that is a layout choice: a line break inside brackets (and so a
comment or backslash there), which ``kerasgen corpus python`` never writes
(it rewrites every file with ``ast.unparse``, one statement per line), so a
model trained on it makes one only when it has lost track of a bracket. The
rest of the grammar (``x = = 1``, a keyword used as a name) is not checked here:
alone this is ``--constrain python-tokens``; ``--constrain python`` adds the whole
grammar and the compiler's rules on the host (``kerasgen.python_check``).

The state follows the tokenizer, per sample (all int32, shape (N,) unless said):

- ``mode``: ``CODE``; ``COMMENT`` (after ``#``, to the line end); ``STRING``
  (a one-line string: no line break but after a backslash); ``TRIPLE`` (a
  triple-quoted string); ``CONTINUATION`` (after a backslash in code: only a
  line break may follow); ``AFTER_EMPTY`` (code right after ``''`` or ``""``,
  which a third quote turns into a triple-quoted string's opening).
- ``quote``: 0 for ``'``, 1 for ``"`` (the open string's); ``fresh``: the
  string has no character yet; ``escaped``: the last character was an
  unescaped backslash inside a string; ``run``: closing quotes seen in a row
  inside a triple-quoted string.
- ``depth`` and ``stack`` (N, MAX_DEPTH): the open brackets, 0 ``(``, 1 ``[``,
  2 ``{``; a closing bracket must match the last one opened.
- ``line_start``: nothing but spaces yet on a line that begins a statement
  (not one inside brackets or after a backslash); ``column``: those spaces
  (a tab advances to the next multiple of 8, as Python counts it);
  ``opener``: the statement before ended with ``:`` at bracket depth 0, so
  this line must be indented further; ``levels`` (N, MAX_LEVELS) and
  ``count``: the indentation stack, ``levels[0] = 0``. A statement's first
  character may stand only at a column on the stack (a dedent to an
  enclosing block), or deeper than the top after an ``opener``; blank and
  comment lines may stand anywhere. ``kinds`` (N, MAX_LEVELS): what the last
  statement at each level was (``K_TRY`` ...), ``before``: the one this
  statement follows at its level.
- ``word``, ``first``, ``number``: the name being read (its hash) and whether
  it is the statement's first word, or a number being read; ``operand``:
  after an operand; ``spelling``: the trie node of a word being spelt (see
  ``python_rules.spelling_tables``); ``statement``: the statement's first word (hashed);
  ``previous`` and ``last``: the class of the last character, and of the last
  one not blank; ``lone_equals``: that was an ``=`` no operator began;
  ``needs_colon``, ``assigned``, ``annotated``, ``lambdas``, ``conditionals``:
  what the statement has had, or still waits for, at depth 0; ``header``:
  where in a ``def`` or ``class`` header (``HEADER_RULES``).

Characters read but not drawn (the prime, the text a draw continues) update
the state without being checked, and a forced character that breaks a rule
leaves a state that recovers at the next line. Only character-level runs can
be constrained: a word or subword token is many characters.

The rules live in three modules: ``python_rules`` (the classes, keywords and
tables, no TensorFlow), ``python_masks`` (``allowed``: what may come next) and
``python_transitions`` (``advance``: the next state), each rule a function of
its own; this one holds the state and the interface the sampler uses.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kerasgen.errors import ParameterError
from kerasgen.python_rules import (
    AFTER_EMPTY,
    CODE,
    DIGIT,
    LETTER,
    MAX_DEPTH,
    MAX_LEVELS,
    NUMBER_LETTERS,
    STRING,
    class_of,
    header_tables,
    spelling_tables,
)


class LexState(NamedTuple):
    """The lexer's state, one row per sample (the fields: this module's docstring)."""

    mode: object
    quote: object
    fresh: object
    escaped: object
    run: object
    depth: object
    stack: object  # (N, MAX_DEPTH)
    line_start: object
    column: object
    opener: object
    levels: object  # (N, MAX_LEVELS)
    count: object
    word: object  # the hash of the name being read, else -1
    first: object  # that name is the statement's first word
    number: object  # a number is being read
    operand: object  # after an operand: a name here must spell a word that may follow one
    spelling: object  # the row of the spelling tables being spelt (a trie node), else -1
    kinds: object  # (N, MAX_LEVELS): the last statement at each level, K_OTHER, K_TRY, ...
    before: object  # the kind of the statement before this one at its level
    statement: object  # the hash of the statement's first word, -1 before it (or none)
    previous: object  # the class of the last character read in code, -1 after others
    lone_equals: object  # that was an '=' at depth 0 that no operator character preceded
    last: object  # the class of the last character in code that was not blank, or OPEN_COLON
    conditionals: object  # conditional expressions at depth 0 still waiting for their else
    needs_colon: object  # a compound statement whose ':' has not come yet
    assigned: object  # the statement has had an '=' at depth 0
    annotated: object  # ... or a ':' that annotates its target
    lambdas: object  # lambdas at depth 0 whose ':' has not come yet
    header: object  # NO_HEADER, DEF_NAME_START, ...


# The fields that are not (N,) int32: their widths, and those held as int64.
WIDTHS = {"stack": MAX_DEPTH, "levels": MAX_LEVELS, "kinds": MAX_LEVELS}
WIDE = ("word", "statement")


def character_classes(vocab) -> np.ndarray:
    """The class of each id of a character-level vocabulary: (V,) int32.

    Raises ParameterError (``constrain``) for other levels, and for a vocabulary
    without a line break (nothing could end a line, so no rule could be kept).
    """
    if vocab.level != "char":
        raise ParameterError(
            "constrain", f"python needs a character-level run; this one is {vocab.level}-level"
        )
    if vocab.token_id("\n") is None:
        raise ParameterError(
            "constrain",
            "python needs a model that writes line breaks; this run's vocabulary has none",
        )
    return np.array([class_of(vocab.decode([i])) for i in range(len(vocab))], np.int32)


class PythonLexer:
    """The constraint over one vocabulary: ``initial`` state, ``allowed`` ids, ``advance``
    (and ``read``, many ids at once).

    They are TensorFlow functions of batched tensors, run inside the sampler's
    compiled loop. The vocabulary's tables are numpy arrays, made once here.
    """

    def __init__(self, vocab):
        self.classes = character_classes(vocab)
        self.codes = np.array(
            [ord(vocab.decode([i])[:1] or "\0") for i in range(len(vocab))], np.int32
        )
        self.trie_moves, self.trie_allowed = spelling_tables(vocab, self.classes)
        self.number_letters = np.array(
            [vocab.decode([i]) in NUMBER_LETTERS for i in range(len(vocab))]
        )
        self.header_allowed, self.header_moves = header_tables()
        self.newline = vocab.token_id("\n")
        # What ends a line's open string ('), ("), bracket ), ], } or header (:), -1: none.
        self.closers = np.array(
            [-1 if (i := vocab.token_id(ch)) is None else i for ch in "'\")]}:"], np.int32
        )
        self.ends_name = ~np.isin(self.classes, (LETTER, DIGIT))  # no part of a name
        self.no_number_letter = np.isin(self.classes, (LETTER,)) & ~self.number_letters
        self._read = None  # the compiled loop of ``read``

    def initial(self, batch) -> LexState:
        """The state at a line start outside any block: (N,) zeros, level 0 on the stack."""
        import tensorflow as tf

        zeros = tf.zeros([batch], tf.int32)
        none = zeros - 1
        no_word = -tf.ones([batch], tf.int64)
        per_level = tf.zeros([batch, MAX_LEVELS], tf.int32)
        return LexState(
            mode=zeros,
            quote=zeros,
            fresh=zeros,
            escaped=zeros,
            run=zeros,
            depth=zeros,
            stack=tf.zeros([batch, MAX_DEPTH], tf.int32),
            line_start=zeros + 1,
            column=zeros,
            opener=zeros,
            levels=per_level,
            count=zeros + 1,
            word=no_word,
            first=zeros,
            number=zeros,
            operand=zeros,
            spelling=none,
            kinds=per_level,
            before=zeros,
            statement=no_word,
            previous=none,
            lone_equals=zeros,
            last=none,
            conditionals=zeros,
            needs_colon=zeros,
            assigned=zeros,
            annotated=zeros,
            lambdas=zeros,
            header=zeros,
        )

    def pack(self, state: LexState) -> tuple:
        """The state as two tensors, (N, PACKED) int32 and (N, 2) int64 (``word`` and
        ``statement``): what the sampler's compiled calls take and give (each input of a
        call costs time), and what it keeps between them. ``unpack`` inverts it."""
        import tensorflow as tf

        names = [name for name in LexState._fields if name not in WIDE]
        if tf.executing_eagerly():  # (a row joining: numpy is many times faster than ops)
            n = len(state.mode)
            ints = np.concatenate([np.reshape(getattr(state, f), (n, -1)) for f in names], 1)
            wide = np.stack([state.word, state.statement], axis=1)
            return tf.constant(ints, tf.int32), tf.constant(wide, tf.int64)
        ints = [tf.reshape(getattr(state, name), [tf.shape(state.mode)[0], -1]) for name in names]
        return tf.concat(ints, axis=1), tf.stack([state.word, state.statement], axis=1)

    def unpack(self, packed) -> LexState:
        ints, wide = packed
        fields, at = {"word": wide[:, 0], "statement": wide[:, 1]}, 0
        for name in LexState._fields:
            if name not in WIDE:
                width = WIDTHS.get(name, 1)
                part = ints[:, at : at + width]
                fields[name] = part if name in WIDTHS else part[:, 0]
                at += width
        return LexState(**fields)

    def allowed(self, state: LexState):
        """(N, V) bool: the ids that may be drawn next (``python_masks``' rules)."""
        import tensorflow as tf

        from kerasgen import python_masks as masks

        s = state
        at = masks.place(s)
        by_class = masks.class_rules(s, at)  # (N, NUM_CLASSES)
        by_class &= masks.only_classes(s, at.in_code)
        by_class &= masks.header_classes(s, at.in_code, self.header_allowed)
        by_id = tf.gather(by_class, tf.constant(self.classes), axis=1)  # (N, V)
        by_id &= masks.number_ids(s, at.in_code, self.no_number_letter)
        by_id &= masks.spelling_ids(s, at, self.trie_allowed)
        by_id &= masks.keyword_ids(s, at, self.ends_name)
        # Never nothing: a row whose rules leave no id (a state only forced text makes)
        # draws from the model's whole distribution.
        return by_id | ~tf.reduce_any(by_id, axis=1, keepdims=True)

    def closer(self, state: LexState):
        """(N,) int32: per row, the id of the character that ends what keeps its line open
        (the quote of a one-line string, the innermost open bracket's closing one, or the
        ``:`` a compound statement waits for), -1 where nothing is open or the vocabulary
        lacks it. The sampler draws it in place of a line break that cannot stand there
        (``Sampler._chunk``)."""
        import tensorflow as tf

        from kerasgen.python_masks import top

        s, closers = state, tf.constant(self.closers)
        in_string = tf.gather(closers, s.quote)
        in_bracket = tf.gather(closers, 2 + top(s.stack, s.depth))
        code = (s.mode == CODE) | (s.mode == AFTER_EMPTY)
        colon = tf.where(code & (s.needs_colon > 0), closers[5], -1)
        in_code = tf.where(code & (s.depth > 0), in_bracket, colon)
        return tf.where(s.mode == STRING, in_string, in_code)

    def advance(self, state: LexState, ids) -> LexState:
        """The state after reading ``ids`` (N,) (``python_transitions``' rules)."""
        import tensorflow as tf

        from kerasgen import python_transitions as rules

        s = state
        c = tf.gather(tf.constant(self.classes), ids)
        modes, char = rules.modes(s, ids, c)
        lines_fields, lines = rules.indentation(s, char)
        name_fields, name = rules.names(s, char, lines, self.codes)
        statement_fields, colons = rules.statement(s, char, lines, name, self.header_moves)
        return LexState(
            **modes,
            **rules.brackets(s, char),
            **lines_fields,
            **name_fields,
            **rules.operands(s, char, lines, name, self.trie_moves),
            **rules.clauses(s, lines, name),
            **rules.context(s, char, lines, name, colons),
            **statement_fields,
        )

    def read(self, state: LexState, ids) -> LexState:
        """The state after reading ``ids`` (N, T), one column after the other."""
        import tensorflow as tf

        if self._read is None:

            @tf.function(reduce_retracing=True)
            def read(state, ids):
                for t in tf.range(tf.shape(ids)[1]):
                    state = self.advance(state, ids[:, t])
                return state

            self._read = read
        return self._read(state, tf.constant(ids, tf.int32))
