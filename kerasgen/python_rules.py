"""The rules of ``kerasgen.python_lexer`` as data: character classes, modes, keywords, tables.

Nothing here runs TensorFlow. The constants name what the lexer's state holds
(a mode, a character class, a def/class header state, the kind of a statement
at its indentation level, the root of a spelling trie); the word lists say
which keywords each rule concerns; ``header_tables`` and ``spelling_tables``
turn ``HEADER_RULES`` and the word lists into the arrays the TensorFlow rules
gather from.
"""

from __future__ import annotations

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

# A name, hashed as it is read: word = (word * HASH_BASE + ord(c)) % HASH_MOD, in int64 (no
# name of the standard library then shares a hash with a keyword).
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
# The tries a name may be spelt from (the rows of ``spelling_tables`` that are roots): after
# an operand at depth 0, in brackets, at depth 0 after each statement's first word of
# AFTER_STATEMENT; and after a try's body.
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
    """The hash of ``word`` as the lexer computes it, one character after the other."""
    value = 0
    for ch in word:
        value = (value * HASH_BASE + ord(ch)) % HASH_MOD
    return value


def hashes(words) -> list[int]:
    return [word_hash(w) for w in words]


def class_of(ch: str) -> int:
    """The character class of one character."""
    if ch in CLASS_OF:
        return CLASS_OF[ch]
    if ch in "0123456789":
        return DIGIT
    return LETTER if ch == "_" or ch.isalpha() else OTHER


def class_mask(classes) -> int:
    """The classes as bits of one integer (bit k: class k)."""
    return sum(1 << k for k in classes)


def header_tables() -> tuple[np.ndarray, np.ndarray]:
    """HEADER_RULES as arrays (NUM_HEADERS, NUM_CLASSES): the classes each state lets
    through (bool), and the state each class leads to (int32; NO_HEADER for the others)."""
    allowed = np.ones((NUM_HEADERS, NUM_CLASSES), bool)
    moves = np.zeros((NUM_HEADERS, NUM_CLASSES), np.int32)
    for state, rules in HEADER_RULES.items():
        allowed[state] = False
        for cls, target in rules.items():
            allowed[state, cls] = True
            moves[state, cls] = target
    moves[PARAMETER] = PARAMETER  # decided by depth in ``python_transitions.header_state``
    return allowed, moves


def spelling_tables(vocab, classes) -> tuple[np.ndarray, np.ndarray]:
    """The tries of the words a name may spell over a vocabulary: (moves, allowed), each
    (rows, V).

    The first rows are the tries' roots (ROOT_OPERAND, ROOT_BRACKETS, ROOT_TRY,
    ROOT_AFTER, ROOT_NO_ELSE), the others their nodes (a prefix spelt so far).
    ``moves[row, id]``: the row after that character, -1 when it leaves the
    trie. ``allowed[row, id]``: what may come: the next letters of a word of
    the set and, once a whole word is spelt, every character that is not part
    of a name; at ROOT_OPERAND also any such character (no name at all), at
    ROOT_TRY what lays out a line.
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
