"""``PythonLexer.allowed``'s rules in TensorFlow: what may be drawn next, one concern a function.

Each rule reads the lexer's state ``s`` (a ``LexState`` of (N,) tensors) and gives a mask
that ``allowed`` ANDs together: first over character classes ((N, NUM_CLASSES) bool:
``class_rules``, ``only_classes``, ``header_classes``), then, gathered to ids, over the
vocabulary ((N, V) bool: ``number_ids``, ``spelling_ids``, ``keyword_ids``).

``operand_root`` and ``after_try`` (which trie a name is spelt from) and the small tensor
helpers ``any_of``, ``one_of`` and ``top`` serve ``python_transitions`` too.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from kerasgen.python_rules import (
    AFTER_EMPTY,
    ATTRIBUTE_DOT,
    BACKSLASH,
    CLASS_NAME,
    CLAUSE_AFTER,
    CLOSE1,
    CLOSE2,
    CLOSE3,
    CODE,
    COLON,
    COMMA,
    COMMENT,
    CONTINUATION,
    DANGLING,
    DEF_NAME,
    DIGIT,
    DOT,
    EQUALS,
    HARD_KEYWORDS,
    HASH,
    K_TRY,
    LETTER,
    MAX_COLUMN,
    MAX_DEPTH,
    MAX_LEVELS,
    NEWLINE,
    NO_COMMA,
    NO_HEADER,
    NUM_CLASSES,
    OPEN1,
    OPEN2,
    OPEN3,
    OPERATOR,
    OTHER,
    PARAMETER_NAME,
    QUOTE1,
    QUOTE2,
    ROOT_AFTER,
    ROOT_BRACKETS,
    ROOT_NO_ELSE,
    ROOT_OPERAND,
    ROOT_TRY,
    SLASH,
    SPACE,
    STAR,
    STRING,
    TAB,
    TRIPLE,
    class_mask,
    hashes,
    word_hash,
)


class Place(NamedTuple):
    """Where the next character would stand: (N,) bool each."""

    true: object  # True in every row
    in_code: object  # in code (not in a string, a comment or after a backslash)
    at_start: object  # in code before the first character of a statement's line
    code_char: object  # a character of code may stand here (at a start: at this column)
    further: object  # at a start, a blank may take the line further right


def place(s) -> Place:
    in_code = (s.mode == CODE) | (s.mode == AFTER_EMPTY)
    here, further = indentation(s)
    at_start = in_code & (s.line_start > 0)
    return Place(
        true=tf.ones_like(s.mode, tf.bool),
        in_code=in_code,
        at_start=at_start,
        code_char=in_code & (~at_start | here),
        further=further,
    )


def indentation(s):
    """At a statement's start: may it begin at this column, may a blank take it further
    right? ((N,) bool each.) After an opener only deeper than the block it is in; else at
    a column on the indentation stack, never left of a try whose body has not met its
    except or finally."""
    on_stack = tf.range(MAX_LEVELS)[None, :] < s.count[:, None]  # (N, L)
    current = top(s.levels, s.count)
    if_opener = tf.cast(s.opener, tf.bool)
    open_try = tf.reduce_any(on_stack & (s.kinds == K_TRY) & (s.levels > s.column[:, None]), axis=1)
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
    return here, further


def line_may_end(s):
    """(N,) bool: a statement's line may end here (its ':', its conditionals' else, and an
    operand after '=', an operator or a ':' have come)."""
    return (s.needs_colon == 0) & (s.conditionals == 0) & ~any_of(s.last, DANGLING)


def colon_rule(s, code_char, soft_block):
    """(N,) bool: a ':' may come. At depth 0 one ends a compound statement's header, a
    lambda's parameters, or annotates a simple statement's target (before any '=')."""
    return code_char & (
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
                    & (any_of(s.last, (LETTER, DIGIT, CLOSE2)) | soft_block)
                )
            )
        )
    )


def class_rules(s, at: Place):
    """(N, NUM_CLASSES) bool: the classes the mode, the brackets, the indentation and the
    statement's line let through."""
    code_char, at_start, in_code = at.code_char, at.at_start, at.in_code
    top_bracket = top(s.stack, s.depth)  # (N,): the last bracket opened (0 when none)
    can_open = code_char & (s.depth < MAX_DEPTH)
    soft_block = any_of(s.statement, hashes(("match", "case")))  # match x: / case y:
    may_end = line_may_end(s)
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
        & ~((s.depth == 0) & (s.lambdas == 0) & any_of(s.statement, hashes(NO_COMMA))),
        COLON: colon_rule(s, code_char, soft_block),
        EQUALS: code_char,
        SPACE: ~at_start | at.further,
        TAB: ~at_start | at.further,
        NEWLINE: tf.where(
            s.mode == STRING,
            s.escaped > 0,
            tf.where(in_code, (s.depth == 0) & may_end, at.true),
        ),
        # A comment or a backslash must end the line, which brackets may not.
        HASH: ~in_code | at_start | (code_char & (s.depth == 0) & may_end),
        BACKSLASH: code_char & (s.depth == 0) & ~at_start,
        OPEN1: can_open,
        OPEN2: can_open,
        OPEN3: can_open,
        CLOSE1: code_char & (s.depth > 0) & (top_bracket == 0),
        CLOSE2: code_char & (s.depth > 0) & (top_bracket == 1),
        CLOSE3: code_char & (s.depth > 0) & (top_bracket == 2),
    }
    # Strings and comments take anything; after a backslash only the line break comes.
    inside = (s.mode == COMMENT) | (s.mode == STRING) | (s.mode == TRIPLE)
    after_backslash = s.mode == CONTINUATION
    columns = []
    for c in range(NUM_CLASSES):
        rule = per_class[c] | inside if c != NEWLINE else per_class[c]
        if c != NEWLINE:
            rule = rule & ~after_backslash
        columns.append(rule)
    return tf.stack(columns, axis=1)  # (N, NUM_CLASSES)


def only_classes(s, in_code):
    """(N, NUM_CLASSES) bool: after an attribute's '.', its name; after a lone '=' where a
    keyword's statement can have no assignment, the second '=' of '=='."""
    only = tf.where(
        s.previous == ATTRIBUTE_DOT,
        class_mask((LETTER, SPACE)),
        tf.where(
            (s.lone_equals > 0) & (s.lambdas == 0) & any_of(s.statement, hashes(HARD_KEYWORDS)),
            class_mask((EQUALS,)),
            -1,
        ),
    )
    return tf.where(
        ((only >= 0) & in_code)[:, None],
        tf.bitwise.right_shift(tf.maximum(only, 0)[:, None], tf.range(NUM_CLASSES)[None, :]) % 2
        > 0,
        True,
    )


def header_classes(s, in_code, header_allowed):
    """(N, NUM_CLASSES) bool: in a def or class header, its name, then (a def's) parameters'
    names (``header_allowed``: ``header_tables``' first)."""
    return tf.gather(tf.constant(header_allowed), tf.where(in_code, s.header, NO_HEADER))


def number_ids(s, in_code, no_number_letter):
    """(N, V) bool: in a number, only the letters one holds (an exponent, j, a base's x/o/b,
    hex digits, '_'); ``no_number_letter`` (V,): the letters that are none of those."""
    return ~((in_code & (s.number > 0))[:, None] & tf.constant(no_number_letter)[None])


def spelling_ids(s, at: Place, trie_allowed):
    """(N, V) bool: after an operand a name spells a word that may follow one there; at a
    try's level after its body, a statement spells except or finally."""
    node = tf.where(
        at.in_code & (s.spelling >= 0),
        s.spelling,
        tf.where(
            at.in_code & (s.operand > 0) & (s.word < 0) & (s.number == 0),
            operand_root(s),
            tf.where(at.at_start & after_try(s), ROOT_TRY, -1),
        ),
    )
    return tf.where(
        (node >= 0)[:, None],
        tf.gather(tf.constant(trie_allowed), tf.maximum(node, 0)),
        True,
    )


def keyword_ids(s, at: Place, ends_name):
    """(N, V) bool: a name that may not end here goes on (``ends_name`` (V,): the ids that
    are no part of a name): a clause keyword (else, elif, except, finally) where its
    statement cannot take it, a keyword as a function's, class's or parameter's name."""
    misplaced = tf.zeros_like(at.true)
    for clause, kinds in CLAUSE_AFTER.items():
        misplaced |= (s.word == word_hash(clause)) & ~any_of(s.before, kinds)
    misplaced &= at.in_code & (s.first > 0)
    misplaced |= (
        at.in_code
        & any_of(s.header, (DEF_NAME, CLASS_NAME, PARAMETER_NAME))
        & any_of(s.word, hashes(HARD_KEYWORDS))
    )
    return ~(misplaced[:, None] & tf.constant(ends_name)[None, :])


# ---------------------------------------------------------------- shared with python_transitions


def operand_root(s):
    """(N,) the trie a name after an operand is spelt from: in brackets, or by the
    statement's first word (AFTER_STATEMENT), else the words allowed anywhere."""
    root = tf.fill(tf.shape(s.mode), ROOT_OPERAND)
    for word, row in ROOT_AFTER.items():
        root = tf.where(s.statement == word_hash(word), row, root)
    no_else = tf.gather(
        tf.constant([ROOT_NO_ELSE.get(r, r) for r in range(3 + len(ROOT_AFTER))]), root
    )
    root = tf.where(s.conditionals > 0, root, no_else)
    return tf.where(s.depth > 0, ROOT_BRACKETS, root)


def after_try(s):
    """(N,) bool: a statement starting at this column would follow a try's body at the try's
    level (not a deeper line of the body, nor a block just opened)."""
    on_stack = tf.range(MAX_LEVELS)[None, :] < s.count[:, None]
    return (s.opener == 0) & tf.reduce_any(
        on_stack & (s.levels == s.column[:, None]) & (s.kinds == K_TRY), axis=1
    )


def any_of(c, classes):
    """``c`` equals one of ``classes`` (a tuple of values)."""
    return tf.reduce_any(tf.stack([c == k for k in classes]), axis=0)


def one_of(c, values):
    """``c == values[0]`` for one value, else ``any_of``."""
    return c == values[0] if len(values) == 1 else any_of(c, values)


def top(stack, size):
    """``stack[row, size[row] - 1]`` per row; 0 where ``size`` is 0."""
    index = tf.maximum(size - 1, 0)
    return tf.where(size > 0, tf.gather(stack, index[:, None], batch_dims=1)[:, 0], 0)
