"""Python's rules as a sampling constraint: characters that would break them are never drawn.

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
rest of the grammar (``x = = 1``, a keyword used as a name) is not checked:
``kerasgen sample --syntax python`` still parses each block and draws it again
when it fails.

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
  ``_spelling_tables``); ``statement``: the statement's first word (hashed);
  ``previous`` and ``last``: the class of the last character, and of the last
  one not blank; ``lone_equals``: that was an ``=`` no operator began;
  ``needs_colon``, ``assigned``, ``annotated``, ``lambdas``, ``conditionals``:
  what the statement has had, or still waits for, at depth 0; ``header``:
  where in a ``def`` or ``class`` header (``HEADER_RULES``).

Characters read but not drawn (the prime, the text a draw continues) update
the state without being checked, and a forced character that breaks a rule
leaves a state that recovers at the next line. Only character-level runs can
be constrained: a word or subword token is many characters.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CODE, COMMENT, STRING, TRIPLE, CONTINUATION, AFTER_EMPTY = range(6)

# Character classes; each vocabulary id maps to one.
(
    OTHER,
    LETTER,
    DIGIT,
    SPACE,
    TAB,
    NEWLINE,
    HASH,
    QUOTE1,
    QUOTE2,
    BACKSLASH,
    OPEN1,
    OPEN2,
    OPEN3,
    CLOSE1,
    CLOSE2,
    CLOSE3,
    COLON,
    COMMA,
    STAR,
    SLASH,
    EQUALS,
    OPERATOR,
    DOT,
) = range(23)
NUM_CLASSES = 23
CLASS_OF = {
    " ": SPACE,
    "\t": TAB,
    "\n": NEWLINE,
    "#": HASH,
    "'": QUOTE1,
    '"': QUOTE2,
    "\\": BACKSLASH,
    "(": OPEN1,
    "[": OPEN2,
    "{": OPEN3,
    ")": CLOSE1,
    "]": CLOSE2,
    "}": CLOSE3,
    ":": COLON,
    ",": COMMA,
    "*": STAR,
    "/": SLASH,
    "=": EQUALS,
    ".": DOT,
    **{op: OPERATOR for op in "!<>+-%&|^@~"},
}

# The header of a def or class statement, read as far as its parameters' names:
# ``def NAME (PARAMETER, ...)`` and ``class NAME``. A state's row in HEADER_RULES lists the
# classes it lets through and where each leads; PARAMETER (an annotation or a default,
# any expression) ends at a ',' or ')' at the header's own bracket depth.
(
    NO_HEADER,
    DEF_NAME_START,
    DEF_NAME,
    DEF_AFTER_NAME,
    PARAMETER_START,
    PARAMETER_NAME,
    PARAMETER_AFTER_NAME,
    PARAMETER_STARS,
    PARAMETER_SLASH,
    PARAMETER,
    CLASS_NAME_START,
    CLASS_NAME,
    CLASS_AFTER_NAME,
    PARAMETER_DEFAULT,
) = range(14)
HEADER_RULES = {
    DEF_NAME_START: {SPACE: DEF_NAME_START, LETTER: DEF_NAME},
    DEF_NAME: {LETTER: DEF_NAME, DIGIT: DEF_NAME, SPACE: DEF_AFTER_NAME, OPEN1: PARAMETER_START},
    DEF_AFTER_NAME: {SPACE: DEF_AFTER_NAME, OPEN1: PARAMETER_START},
    PARAMETER_START: {
        SPACE: PARAMETER_START,
        LETTER: PARAMETER_NAME,
        STAR: PARAMETER_STARS,
        SLASH: PARAMETER_SLASH,
        CLOSE1: NO_HEADER,
    },
    PARAMETER_NAME: {
        LETTER: PARAMETER_NAME,
        DIGIT: PARAMETER_NAME,
        SPACE: PARAMETER_AFTER_NAME,
        COMMA: PARAMETER_START,
        CLOSE1: NO_HEADER,
        COLON: PARAMETER,
        EQUALS: PARAMETER_DEFAULT,
    },
    PARAMETER_AFTER_NAME: {
        SPACE: PARAMETER_AFTER_NAME,
        COMMA: PARAMETER_START,
        CLOSE1: NO_HEADER,
        COLON: PARAMETER,
        EQUALS: PARAMETER_DEFAULT,
    },
    # A default's first character: anything but a second '=' (``x == 1`` is no parameter).
    PARAMETER_DEFAULT: {
        **{
            k: PARAMETER
            for k in range(NUM_CLASSES)
            if k not in (EQUALS, COMMA, CLOSE1, NEWLINE, HASH, BACKSLASH)
        },
        SPACE: PARAMETER_DEFAULT,
    },
    PARAMETER_STARS: {STAR: PARAMETER_STARS, LETTER: PARAMETER_NAME, COMMA: PARAMETER_START},
    PARAMETER_SLASH: {SPACE: PARAMETER_SLASH, COMMA: PARAMETER_START, CLOSE1: NO_HEADER},
    CLASS_NAME_START: {SPACE: CLASS_NAME_START, LETTER: CLASS_NAME},
    CLASS_NAME: {
        LETTER: CLASS_NAME,
        DIGIT: CLASS_NAME,
        SPACE: CLASS_AFTER_NAME,
        OPEN1: NO_HEADER,
        COLON: NO_HEADER,
    },
    CLASS_AFTER_NAME: {SPACE: CLASS_AFTER_NAME, OPEN1: NO_HEADER, COLON: NO_HEADER},
}
NUM_HEADERS = 14

MAX_DEPTH = 32  # brackets open at once; opening one more is not drawn
MAX_LEVELS = 32  # indentation levels
MAX_COLUMN = 120  # no statement is drawn to start further right

# A name, hashed as it is read: word = (word * HASH_BASE + ord(c)) % HASH_MOD, in int64 (the
# standard library's 38,000 names then share no hash with a keyword).
HASH_BASE, HASH_MOD = 131, (1 << 40) - 87
# Compound statements: their line cannot end before a ':' at bracket depth 0.
COMPOUND = (
    "if",
    "elif",
    "else",
    "while",
    "for",
    "try",
    "except",
    "finally",
    "with",
    "def",
    "class",
    "async",
)

# Python's keywords; a name that is one is no parameter, function or class name, and a
# statement that begins with one has no '=' at depth 0 (but in '==' and the like).
HARD_KEYWORDS = (
    "False",
    "None",
    "True",
    "and",
    "as",
    "assert",
    "async",
    "await",
    "break",
    "class",
    "continue",
    "def",
    "del",
    "elif",
    "else",
    "except",
    "finally",
    "for",
    "from",
    "global",
    "if",
    "import",
    "in",
    "is",
    "lambda",
    "nonlocal",
    "not",
    "or",
    "pass",
    "raise",
    "return",
    "try",
    "while",
    "with",
    "yield",
)
# Words after which a name may follow (with the soft keywords of match and type statements);
# any other name, a closing bracket or a string is an operand, after which a name is one
# of the words that may follow an operand there, or nothing: "x y" is never Python.
KEYWORDS = HARD_KEYWORDS + ("match", "case", "type", "_")
OPERAND_WORDS = ("if", "else", "in", "is", "not", "and", "or")  # anywhere
IN_BRACKETS = OPERAND_WORDS + ("for", "async", "as")  # comprehensions, with (a as b)
# At depth 0, by the statement's first word: import a as b, from a import b, raise a from b.
AFTER_STATEMENT = {
    "import": ("as",),
    "with": ("as",),
    "except": ("as",),
    "case": ("as",),
    "async": ("as",),
    "from": ("as", "import"),
    "raise": ("from",),
}

# What the last statement at an indentation level was, for the clauses that may follow it:
# a try takes except or finally (and nothing else); except takes except, else, finally;
# if and elif take elif and else; for and while take else; try's else takes finally.
K_OTHER, K_TRY, K_EXCEPT, K_IF, K_LOOP, K_TRY_ELSE = range(6)
CLAUSE_AFTER = {
    "except": (K_TRY, K_EXCEPT),
    "finally": (K_TRY, K_EXCEPT, K_TRY_ELSE),
    "elif": (K_IF,),
    "else": (K_IF, K_LOOP, K_EXCEPT),
}
AFTER_TRY = ("except", "finally")
# The tries a name may be spelt from (the rows of PythonLexer's spelling tables that are
# roots): after an operand at depth 0, in brackets, at depth 0 after each statement's
# first word of AFTER_STATEMENT; and after a try's body.
# At depth 0 "else" follows an operand only to end a conditional expression ("a if b
# else c"), so each depth-0 trie has a twin without it (ROOT_NO_ELSE).
ROOT_OPERAND, ROOT_BRACKETS, ROOT_TRY = 0, 1, 2
ROOT_AFTER = {word: 3 + k for k, word in enumerate(AFTER_STATEMENT)}
ROOT_NO_ELSE = {
    ROOT_OPERAND: 3 + len(AFTER_STATEMENT),
    **{row: 4 + len(AFTER_STATEMENT) + k for k, row in enumerate(ROOT_AFTER.values())},
}
# Statements whose condition is no tuple: a ',' at depth 0 (outside a lambda) breaks them.
NO_COMMA = ("if", "elif", "while")
NUMBER_LETTERS = set("eEjJxXoObB_abcdefABCDEF")  # the letters a number literal can hold
ATTRIBUTE_DOT = NUM_CLASSES  # ``previous`` after a '.' that follows a name, bracket or string
# A line cannot end (``last``) after '=', an operator, or a ':' that opens no block.
OPEN_COLON = NUM_CLASSES + 1
DANGLING = (EQUALS, OPERATOR, SLASH, OPEN_COLON)


def word_hash(word: str) -> int:
    value = 0
    for ch in word:
        value = (value * HASH_BASE + ord(ch)) % HASH_MOD
    return value


class LexState(NamedTuple):
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


def _class_of(ch: str) -> int:
    if ch in CLASS_OF:
        return CLASS_OF[ch]
    if ch in "0123456789":
        return DIGIT
    return LETTER if ch == "_" or ch.isalpha() else OTHER


def character_classes(vocab) -> np.ndarray:
    """The class of each id of a character-level vocabulary: (V,) int32.

    Raises ValueError for other levels, and for a vocabulary without a line
    break (nothing could end a line, so no rule could be kept).
    """
    if vocab.level != "char":
        raise ValueError(
            f"--constrain python needs a character-level run; this one is {vocab.level}-level"
        )
    if vocab.token_id("\n") is None:
        raise ValueError(
            "--constrain python needs a model that writes line breaks; this "
            "run's vocabulary has none"
        )
    return np.array([_class_of(vocab.decode([i])) for i in range(len(vocab))], np.int32)


class PythonLexer:
    """The constraint over one vocabulary: ``initial`` state, ``allowed`` ids, ``advance``
    (and ``read``, many ids at once).

    All three are TensorFlow functions of batched tensors, run inside the
    sampler's compiled loop.
    """

    def __init__(self, vocab):
        self.classes = character_classes(vocab)
        self.codes = np.array(
            [ord(vocab.decode([i])[:1] or "\0") for i in range(len(vocab))], np.int32
        )
        self.trie_moves, self.trie_allowed = _spelling_tables(vocab, self.classes)
        self.number_letters = np.array(
            [vocab.decode([i]) in NUMBER_LETTERS for i in range(len(vocab))]
        )
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

    def allowed(self, state: LexState):
        """(N, V) bool: the ids that may be drawn next."""
        import tensorflow as tf

        s = state
        true = tf.ones_like(s.mode, tf.bool)
        in_code = (s.mode == CODE) | (s.mode == AFTER_EMPTY)
        top = _top(s.stack, s.depth)  # (N,): the last bracket opened (0 when none)
        on_stack = tf.range(MAX_LEVELS)[None, :] < s.count[:, None]  # (N, L)
        current = _top(s.levels, s.count)
        if_opener = tf.cast(s.opener, tf.bool)
        # At a statement's start: may it begin at this column, may it go further right?
        # (Never left of a try whose body has not met its except or finally.)
        open_try = tf.reduce_any(
            on_stack & (s.kinds == K_TRY) & (s.levels > s.column[:, None]), axis=1
        )
        here = tf.where(
            if_opener,
            s.column > current,
            tf.reduce_any(on_stack & (s.levels == s.column[:, None]), axis=1) & ~open_try,
        )
        further = tf.where(
            if_opener,
            s.column < MAX_COLUMN,
            tf.reduce_any(on_stack & (s.levels > s.column[:, None]), axis=1),
        )
        at_start = in_code & (s.line_start > 0)
        code_char = in_code & (~at_start | here)  # a character that starts or continues code
        can_open = code_char & (s.depth < MAX_DEPTH)
        soft_block = _any_of(s.statement, _hashes(("match", "case")))  # match x: / case y:
        line_may_end = (s.needs_colon == 0) & (s.conditionals == 0) & ~_any_of(s.last, DANGLING)
        per_class = {
            OTHER: code_char,
            LETTER: code_char,
            DIGIT: code_char,
            OPERATOR: code_char,
            DOT: code_char,
            STAR: code_char,
            SLASH: code_char,
            QUOTE1: code_char,
            QUOTE2: code_char,
            COMMA: code_char
            & ~((s.depth == 0) & (s.lambdas == 0) & _any_of(s.statement, _hashes(NO_COMMA))),
            # A ':' at depth 0 ends a compound statement's header, a lambda's parameters,
            # or annotates a simple statement's target (before any '=').
            COLON: code_char
            & (
                (s.depth > 0)
                | (
                    (s.conditionals == 0)
                    & (
                        (s.needs_colon > 0)
                        | (s.lambdas > 0)
                        | (s.word == word_hash("lambda"))
                        | (
                            (s.assigned == 0)
                            & (s.annotated == 0)
                            & (_any_of(s.last, (LETTER, DIGIT, CLOSE2)) | soft_block)
                        )
                    )
                )
            ),
            EQUALS: code_char,
            SPACE: ~at_start | further,
            TAB: ~at_start | further,
            NEWLINE: tf.where(
                s.mode == STRING,
                s.escaped > 0,
                tf.where(in_code, (s.depth == 0) & line_may_end, true),
            ),
            # A comment or a backslash must end the line, which brackets may not.
            HASH: ~in_code | at_start | (code_char & (s.depth == 0) & line_may_end),
            BACKSLASH: code_char & (s.depth == 0) & ~at_start,
            OPEN1: can_open,
            OPEN2: can_open,
            OPEN3: can_open,
            CLOSE1: code_char & (s.depth > 0) & (top == 0),
            CLOSE2: code_char & (s.depth > 0) & (top == 1),
            CLOSE3: code_char & (s.depth > 0) & (top == 2),
        }
        inside = (s.mode == COMMENT) | (s.mode == STRING) | (s.mode == TRIPLE)
        after_backslash = s.mode == CONTINUATION
        columns = []
        for c in range(NUM_CLASSES):
            rule = per_class[c] | inside if c != NEWLINE else per_class[c]
            if c != NEWLINE:
                rule = rule & ~after_backslash
            columns.append(rule)
        by_class = tf.stack(columns, axis=1)  # (N, NUM_CLASSES)
        # After an attribute's '.', its name; after a lone '=' where a keyword's statement
        # can have no assignment, the second '=' of '=='.
        only = tf.where(
            s.previous == ATTRIBUTE_DOT,
            _class_mask((LETTER, SPACE)),
            tf.where(
                (s.lone_equals > 0)
                & (s.lambdas == 0)
                & _any_of(s.statement, _hashes(HARD_KEYWORDS)),
                _class_mask((EQUALS,)),
                -1,
            ),
        )
        by_class &= tf.where(
            ((only >= 0) & in_code)[:, None],
            tf.bitwise.right_shift(tf.maximum(only, 0)[:, None], tf.range(NUM_CLASSES)[None, :]) % 2
            > 0,
            True,
        )
        # A def or class header: its name, then (a def's) parameters' names.
        allowed, _ = _header_tables()
        by_class &= tf.gather(tf.constant(allowed), tf.where(in_code, s.header, NO_HEADER))
        by_id = tf.gather(by_class, tf.constant(self.classes), axis=1)  # (N, V)
        # A number's letters: an exponent, j, a base's x/o/b, hex digits, '_'.
        by_id &= ~(
            (in_code & (s.number > 0))[:, None]
            & tf.constant(np.isin(self.classes, (LETTER,)) & ~self.number_letters)[None]
        )
        # After an operand a name spells a word that may follow one there; at a try's
        # level after its body, a statement spells except or finally.
        node = tf.where(
            in_code & (s.spelling >= 0),
            s.spelling,
            tf.where(
                in_code & (s.operand > 0) & (s.word < 0) & (s.number == 0),
                _operand_root(s),
                tf.where(at_start & _after_try(s), ROOT_TRY, -1),
            ),
        )
        by_id &= tf.where(
            (node >= 0)[:, None],
            tf.gather(tf.constant(self.trie_allowed), tf.maximum(node, 0)),
            True,
        )
        # A clause keyword (else, elif, except, finally) where its statement cannot take it
        # may not end: the name goes on instead.
        misplaced = tf.zeros_like(true)
        for clause, kinds in CLAUSE_AFTER.items():
            misplaced |= (s.word == word_hash(clause)) & ~_any_of(s.before, kinds)
        misplaced &= in_code & (s.first > 0)
        # Nor may a keyword be a function's, class's or parameter's name.
        misplaced |= (
            in_code
            & _any_of(s.header, (DEF_NAME, CLASS_NAME, PARAMETER_NAME))
            & _any_of(s.word, _hashes(HARD_KEYWORDS))
        )
        ends_name = tf.constant(~np.isin(self.classes, (LETTER, DIGIT)))
        by_id &= ~(misplaced[:, None] & ends_name[None, :])
        # Never nothing: a row whose rules leave no id (a state only forced text makes)
        # draws from the model's whole distribution.
        return by_id | ~tf.reduce_any(by_id, axis=1, keepdims=True)

    def advance(self, state: LexState, ids) -> LexState:
        """The state after reading ``ids`` (N,)."""
        import tensorflow as tf

        s = state
        c = tf.gather(tf.constant(self.classes), ids)
        is_quote = (c == QUOTE1) | (c == QUOTE2)
        its_quote = c - QUOTE1  # 0 or 1 when is_quote
        same_quote = is_quote & (its_quote == s.quote)
        zeros = tf.zeros_like(c)

        # Inside a one-line string.
        in_string = s.mode == STRING
        closes = in_string & (s.escaped == 0) & same_quote
        string_mode = tf.where(
            closes,
            tf.where(s.fresh > 0, AFTER_EMPTY, CODE),
            tf.where((c == NEWLINE) & (s.escaped == 0), CODE, STRING),
        )
        string_escaped = tf.cast((s.escaped == 0) & (c == BACKSLASH), tf.int32)

        # Inside a triple-quoted string.
        counts = (s.escaped == 0) & same_quote
        triple_run = tf.where(counts, s.run + 1, zeros)
        triple_mode = tf.where(triple_run >= 3, CODE, TRIPLE)

        # Code (AFTER_EMPTY reads as code unless the third quote comes).
        opens_triple = (s.mode == AFTER_EMPTY) & same_quote
        code = (s.mode == CODE) | ((s.mode == AFTER_EMPTY) & ~opens_triple)
        comment_ends = (s.mode == COMMENT) & (c == NEWLINE)
        joined = (s.mode == CONTINUATION) & (c == NEWLINE)  # a continuation line: no indent
        layout = code | comment_ends  # characters that end or lay out a line
        significant = code & ~_any_of(c, (SPACE, TAB, NEWLINE, HASH))
        code_mode = tf.where(
            is_quote,
            STRING,
            tf.where(c == HASH, COMMENT, tf.where(c == BACKSLASH, CONTINUATION, CODE)),
        )

        mode = tf.where(
            in_string,
            string_mode,
            tf.where(
                s.mode == TRIPLE,
                triple_mode,
                tf.where(
                    opens_triple,
                    TRIPLE,
                    tf.where(
                        code,
                        code_mode,
                        tf.where(comment_ends | joined | (s.mode == CONTINUATION), CODE, s.mode),
                    ),
                ),
            ),
        )

        # Brackets.
        opening = code & _any_of(c, (OPEN1, OPEN2, OPEN3)) & (s.depth < MAX_DEPTH)
        closing = code & _any_of(c, (CLOSE1, CLOSE2, CLOSE3)) & (s.depth > 0)
        slot = tf.range(MAX_DEPTH)[None, :] == s.depth[:, None]  # (N, D)
        stack = tf.where(opening[:, None] & slot, (c - OPEN1)[:, None], s.stack)
        depth = s.depth + tf.cast(opening, tf.int32) - tf.cast(closing, tf.int32)

        # Lines and indentation.
        line_end = layout & (c == NEWLINE) & (s.depth == 0)
        starts_statement = significant & (s.line_start > 0)
        column = tf.where(
            line_end,
            zeros,
            tf.where(
                layout & (s.line_start > 0) & (c == SPACE),
                s.column + 1,
                tf.where(
                    layout & (s.line_start > 0) & (c == TAB), (s.column // 8 + 1) * 8, s.column
                ),
            ),
        )
        current = _top(s.levels, s.count)
        push = starts_statement & (s.opener > 0) & (s.column > current) & (s.count < MAX_LEVELS)
        levels = tf.where(
            push[:, None] & (tf.range(MAX_LEVELS)[None, :] == s.count[:, None]),
            s.column[:, None],
            s.levels,
        )
        # A dedent keeps the levels at or left of the column (level 0 always stays).
        kept = tf.reduce_sum(
            tf.cast(
                (tf.range(MAX_LEVELS)[None, :] < s.count[:, None])
                & (s.levels <= s.column[:, None]),
                tf.int32,
            ),
            axis=1,
        )
        count = tf.where(
            push,
            s.count + 1,
            tf.where(starts_statement & (s.opener == 0), tf.maximum(kept, 1), s.count),
        )
        line_start = tf.where(
            line_end, tf.ones_like(c), tf.where(starts_statement, zeros, s.line_start)
        )
        opener = tf.where(significant, tf.cast((c == COLON) & (s.depth == 0), tf.int32), s.opener)

        # Names and numbers: which keyword, if any, begins the statement; operands.
        is_word = (c == LETTER) | (c == DIGIT)
        code_point = tf.cast(tf.gather(tf.constant(self.codes), ids), tf.int64)
        minus = -tf.ones_like(c)
        no_word = -tf.ones_like(code_point)
        starts_name = code & (c == LETTER) & (s.word < 0) & (s.number == 0)
        in_name = code & (s.word >= 0) & is_word
        word = tf.where(
            starts_name,
            code_point,
            tf.where(in_name, (s.word * HASH_BASE + code_point) % HASH_MOD, no_word),
        )
        first = tf.where(
            starts_name, tf.cast(starts_statement, tf.int32), tf.where(in_name, s.first, zeros)
        )
        number = tf.cast(
            code
            & (
                ((s.number > 0) & (is_word | (c == DOT)))
                | ((s.word < 0) & (s.number == 0) & (c == DIGIT))
            ),
            tf.int32,
        )
        word_ends = code & (s.word >= 0) & ~is_word
        ended = tf.where(word_ends, s.word, no_word)
        keyword = tf.where(s.first > 0, ended, no_word)  # the statement's first word
        compound = _any_of(keyword, [word_hash(k) for k in COMPOUND])
        colon = code & (c == COLON) & (s.depth == 0)
        needs_colon = tf.where(
            line_end | colon, zeros, tf.where(compound, tf.ones_like(c), s.needs_colon)
        )
        header = self._header(s.header, c, code, word_ends & (c == SPACE), keyword, s.depth)
        lambdas = s.lambdas + tf.cast((ended == word_hash("lambda")) & (s.depth == 0), tf.int32)
        header_colon = colon & ((s.needs_colon > 0) | compound)  # "try:" ends its word too
        lambda_colon = colon & ~header_colon & (lambdas > 0)
        fresh_statement = line_end | header_colon
        lambdas = tf.where(fresh_statement, zeros, lambdas - tf.cast(lambda_colon, tf.int32))
        assigned = tf.where(
            fresh_statement,
            zeros,
            tf.where(code & (c == EQUALS) & (s.depth == 0), tf.ones_like(c), s.assigned),
        )
        annotated = tf.where(
            fresh_statement,
            zeros,
            tf.where(colon & ~header_colon & ~lambda_colon, tf.ones_like(c), s.annotated),
        )
        blank = (c == SPACE) | (c == TAB)
        closes_string = (in_string & ((mode == CODE) | (mode == AFTER_EMPTY)) & (c != NEWLINE)) | (
            (s.mode == TRIPLE) & (mode == CODE)
        )
        operand = tf.cast(
            (word_ends & ~_any_of(ended, [word_hash(k) for k in KEYWORDS]) & blank)
            | (code & _any_of(c, (CLOSE1, CLOSE2, CLOSE3)))
            | closes_string
            | (code & (s.operand > 0) & blank & (s.word < 0)),
            tf.int32,
        )
        spell_from = tf.where(
            s.spelling >= 0,
            s.spelling,
            tf.where(
                starts_name & (s.operand > 0),
                _operand_root(s),
                tf.where(starts_name & starts_statement & _after_try(s), ROOT_TRY, -1),
            ),
        )
        spelling = tf.where(
            code & (spell_from >= 0),
            tf.gather_nd(
                tf.constant(self.trie_moves), tf.stack([tf.maximum(spell_from, 0), ids], axis=1)
            ),
            minus,
        )
        # The kind of each level's last statement: OTHER when one starts, then what its
        # first word says; ``before``: the kind it follows at its level.
        level = count - 1
        at_level = tf.range(MAX_LEVELS)[None, :] == level[:, None]  # (N, L)
        kind_here = tf.reduce_sum(tf.where(at_level, s.kinds, 0), axis=1)
        before = tf.where(starts_statement, tf.where(push, K_OTHER, kind_here), s.before)
        clause = tf.where(
            keyword == word_hash("try"),
            K_TRY,
            tf.where(
                keyword == word_hash("except"),
                K_EXCEPT,
                tf.where(
                    _any_of(keyword, (word_hash("if"), word_hash("elif"))),
                    K_IF,
                    tf.where(
                        _any_of(keyword, (word_hash("for"), word_hash("while"))),
                        K_LOOP,
                        tf.where(
                            (keyword == word_hash("else")) & (s.before == K_EXCEPT),
                            K_TRY_ELSE,
                            K_OTHER,
                        ),
                    ),
                ),
            ),
        )
        written = starts_statement | (keyword >= 0)
        kinds = tf.where(
            at_level & written[:, None], tf.where(keyword >= 0, clause, K_OTHER)[:, None], s.kinds
        )

        # (A one-line body after a compound statement's ':' is a statement of its own.)
        statement = tf.where(
            line_end | header_colon,
            no_word,
            tf.where(keyword >= 0, keyword, tf.where(starts_statement, no_word, s.statement)),
        )
        attribute_dot = (c == DOT) & (
            (s.word >= 0) | _any_of(s.previous, (CLOSE1, CLOSE2, CLOSE3, QUOTE1, QUOTE2))
        )
        previous = tf.where(
            code, tf.where(attribute_dot, ATTRIBUTE_DOT, c), tf.where(closes_string, QUOTE1, minus)
        )
        lone_equals = tf.cast(
            code
            & (c == EQUALS)
            & (s.depth == 0)
            & ~_any_of(s.previous, (EQUALS, COLON, STAR, SLASH, OPERATOR)),
            tf.int32,
        )
        soft_block = _any_of(s.statement, _hashes(("match", "case")))  # match x: / case y:
        last = tf.where(
            line_end,
            minus,
            tf.where(
                significant,
                tf.where(colon & ~header_colon & ~soft_block, OPEN_COLON, c),
                tf.where(closes_string, QUOTE1, s.last),
            ),
        )
        # A conditional expression's if and else: at depth 0, past the statement's first
        # word (a comprehension's if is in brackets; a case's is its guard).
        spelt = word_ends & (s.depth == 0) & (s.first == 0) & ~soft_block
        conditionals = tf.where(
            line_end,
            zeros,
            tf.maximum(
                s.conditionals
                + tf.cast(spelt & (ended == word_hash("if")), tf.int32)
                - tf.cast(spelt & (ended == word_hash("else")), tf.int32),
                0,
            ),
        )

        return LexState(
            mode=mode,
            quote=tf.where(code & is_quote, its_quote, s.quote),
            fresh=tf.cast(code & is_quote, tf.int32),
            escaped=tf.where(in_string | (s.mode == TRIPLE), string_escaped, zeros),
            run=tf.where(s.mode == TRIPLE, triple_run, zeros),
            depth=depth,
            stack=stack,
            line_start=line_start,
            column=column,
            opener=opener,
            levels=levels,
            count=count,
            word=word,
            first=first,
            number=number,
            operand=operand,
            spelling=spelling,
            kinds=kinds,
            before=before,
            statement=statement,
            previous=previous,
            lone_equals=lone_equals,
            last=last,
            conditionals=conditionals,
            needs_colon=needs_colon,
            assigned=assigned,
            annotated=annotated,
            lambdas=lambdas,
            header=header,
        )

    @staticmethod
    def _header(header, c, code, word_then_space, keyword, depth):
        """The next header state (HEADER_RULES); a def or class starts one."""
        import tensorflow as tf

        _, moves = _header_tables()
        moved = tf.gather_nd(tf.constant(moves), tf.stack([header, c], axis=1))
        # A parameter's annotation or default ends at the header's own ',' or ')'.
        moved = tf.where(
            header == PARAMETER,
            tf.where(
                (c == COMMA) & (depth == 1),
                PARAMETER_START,
                tf.where((c == CLOSE1) & (depth == 1), NO_HEADER, PARAMETER),
            ),
            moved,
        )
        started = tf.where(
            keyword == word_hash("def"),
            DEF_NAME_START,
            tf.where(keyword == word_hash("class"), CLASS_NAME_START, tf.zeros_like(c)),
        )
        return tf.where(word_then_space & (started > 0), started, tf.where(code, moved, header))

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


def _header_tables() -> tuple[np.ndarray, np.ndarray]:
    """HEADER_RULES as arrays (NUM_HEADERS, NUM_CLASSES): the classes each state lets
    through (bool), and the state each class leads to (int32; NO_HEADER for the others)."""
    allowed = np.ones((NUM_HEADERS, NUM_CLASSES), bool)
    moves = np.zeros((NUM_HEADERS, NUM_CLASSES), np.int32)
    for state, rules in HEADER_RULES.items():
        allowed[state] = False
        for cls, target in rules.items():
            allowed[state, cls] = True
            moves[state, cls] = target
    moves[PARAMETER] = PARAMETER  # decided by depth in ``PythonLexer._header``
    return allowed, moves


def _hashes(words) -> list[int]:
    return [word_hash(w) for w in words]


def _class_mask(classes) -> int:
    """The classes as bits of one integer (bit k: class k)."""
    return sum(1 << k for k in classes)


def _operand_root(s: LexState):
    """(N,) the trie a name after an operand is spelt from: in brackets, or by the
    statement's first word (AFTER_STATEMENT), else the words allowed anywhere."""
    import tensorflow as tf

    root = tf.fill(tf.shape(s.mode), ROOT_OPERAND)
    for word, row in ROOT_AFTER.items():
        root = tf.where(s.statement == word_hash(word), row, root)
    no_else = tf.gather(
        tf.constant([ROOT_NO_ELSE.get(r, r) for r in range(3 + len(ROOT_AFTER))]), root
    )
    root = tf.where(s.conditionals > 0, root, no_else)
    return tf.where(s.depth > 0, ROOT_BRACKETS, root)


def _after_try(s: LexState):
    """(N,) bool: a statement starting at this column would follow a try's body at the try's
    level (not a deeper line of the body, nor a block just opened)."""
    import tensorflow as tf

    on_stack = tf.range(MAX_LEVELS)[None, :] < s.count[:, None]
    return (s.opener == 0) & tf.reduce_any(
        on_stack & (s.levels == s.column[:, None]) & (s.kinds == K_TRY), axis=1
    )


def _spelling_tables(vocab, classes) -> tuple[np.ndarray, np.ndarray]:
    """The tries of the words a name may spell over a vocabulary: (moves, allowed), each
    (rows, V).

    The first rows are the tries' roots (ROOT_OPERAND, ROOT_BRACKETS, ROOT_TRY,
    ROOT_AFTER), the others their nodes (a prefix spelt so far). ``moves[row, id]``: the row after
    that character, -1 when it leaves the trie. ``allowed[row, id]``: what may
    come: the next letters of a word of the set and, once a whole word is
    spelt, every character that is not part of a name; at ROOT_OPERAND also
    any such character (no name at all), at ROOT_TRY what lays out a line.
    """
    chars = [vocab.decode([i]) for i in range(len(vocab))]
    not_name = ~np.isin(classes, (LETTER, DIGIT))
    layout = np.isin(classes, (SPACE, TAB, NEWLINE, HASH))
    tries = [
        (ROOT_OPERAND, OPERAND_WORDS, not_name),
        (ROOT_BRACKETS, IN_BRACKETS, not_name),
        (ROOT_TRY, AFTER_TRY, layout),
    ]
    tries += [
        (ROOT_AFTER[word], OPERAND_WORDS + more, not_name) for word, more in AFTER_STATEMENT.items()
    ]
    tries += [
        (ROOT_NO_ELSE[root], tuple(w for w in words if w != "else"), at_root)
        for root, words, at_root in tries
        if root in ROOT_NO_ELSE
    ]
    rows = {}  # (root, prefix) -> row
    for root, _, _ in tries:
        rows[root, ""] = root
    for root, words, _ in tries:
        for prefix in sorted({w[:k] for w in words for k in range(1, len(w) + 1)}):
            rows[root, prefix] = len(rows)
    moves = np.full((len(rows), len(chars)), -1, np.int32)
    allowed = np.zeros((len(rows), len(chars)), bool)
    for root, words, at_root in tries:
        allowed[root] |= at_root
        for (r, prefix), row in rows.items():
            if r != root:
                continue
            for i, ch in enumerate(chars):
                if (root, prefix + ch) in rows:
                    moves[row, i] = rows[root, prefix + ch]
                    allowed[row, i] = True
            if prefix in words:
                allowed[row] |= not_name
    return moves, allowed


def _any_of(c, classes):
    import tensorflow as tf

    return tf.reduce_any(tf.stack([c == k for k in classes]), axis=0)


def _top(stack, size):
    """``stack[row, size[row] - 1]`` per row; 0 where ``size`` is 0."""
    import tensorflow as tf

    index = tf.maximum(size - 1, 0)
    return tf.where(size > 0, tf.gather(stack, index[:, None], batch_dims=1)[:, 0], 0)
