"""``PythonLexer.advance``'s rules in TensorFlow: the state after one character, one concern
a function.

Each reads the state before (``s``, a ``LexState`` of (N,) tensors) and what the rules
before it found about the character read (``Char``, ``Lines``, ``Name``), and returns the
fields of the next state it decides, as a dict, with what it found for the rules after it:

- ``modes``: strings, comments, backslash continuations (mode, quote, fresh, escaped, run);
- ``brackets``: the open brackets (depth, stack);
- ``indentation``: line starts, columns and the indentation stack;
- ``names``: the name or number being read, and the statement's first word;
- ``statement``: what the statement has had at depth 0: its compound keyword's ':',
  lambdas, '=', an annotation, the def or class header (``header_state``);
- ``operands``: an operand read, and the trie a name after it is spelt from;
- ``clauses``: the kind of each indentation level's last statement (a try, an if ...);
- ``context``: the statement's first word, the last characters, conditional expressions.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from kerasgen.python_masks import after_try, any_of, one_of, operand_root, top
from kerasgen.python_rules import (
    AFTER_EMPTY,
    ATTRIBUTE_DOT,
    BACKSLASH,
    CLASS_NAME_START,
    CLOSE1,
    CLOSE2,
    CLOSE3,
    CODE,
    COLON,
    COMMA,
    COMMENT,
    COMPOUND,
    CONTINUATION,
    DEF_NAME_START,
    DIGIT,
    DOT,
    EQUALS,
    HASH,
    HASH_BASE,
    HASH_MOD,
    K_EXCEPT,
    K_IF,
    K_LOOP,
    K_OTHER,
    K_TRY,
    K_TRY_ELSE,
    KEYWORDS,
    LETTER,
    MAX_DEPTH,
    MAX_LEVELS,
    NEWLINE,
    NO_HEADER,
    OPEN1,
    OPEN2,
    OPEN3,
    OPEN_COLON,
    OPERATOR,
    PARAMETER,
    PARAMETER_START,
    QUOTE1,
    QUOTE2,
    ROOT_TRY,
    SLASH,
    SPACE,
    STAR,
    STRING,
    TAB,
    TRIPLE,
    hashes,
    word_hash,
)

# The kind a statement's first word gives its level, tried in this order (then an else
# after an except is K_TRY_ELSE, any other statement K_OTHER).
KIND_OF_STATEMENT = (
    (K_TRY, ("try",)),
    (K_EXCEPT, ("except",)),
    (K_IF, ("if", "elif")),
    (K_LOOP, ("for", "while")),
)
# The header a def or class statement starts.
HEADER_OF_STATEMENT = (("def", DEF_NAME_START), ("class", CLASS_NAME_START))


class Char(NamedTuple):
    """The character read, (N,) each, and what it is in the mode it was read in."""

    ids: object
    c: object  # its class
    zeros: object  # int32 0s
    minus: object  # int32 -1s
    code: object  # it is read as code
    layout: object  # code, or the line break that ends a comment: it lays out a line
    significant: object  # code but a blank, a line break or a comment's '#'
    closes_string: object  # it ends a string


class Lines(NamedTuple):
    """What the character read does to the lines, (N,) each."""

    line_end: object  # the line break that ends a statement (in code at depth 0)
    starts_statement: object  # the statement's first character
    push: object  # ... one that opens a block: its column goes on the indentation stack
    count: object  # the levels on the stack after it


class Name(NamedTuple):
    """What the character read does to the names, (N,) each."""

    no_word: object  # int64 -1s
    starts_name: object  # the character begins a name
    word_ends: object  # the character ends a name
    ended: object  # the hash of the name it ends (int64), else -1
    keyword: object  # ... where that name is the statement's first word, else -1


class Colons(NamedTuple):
    """The character read as a ':', (N,) bool each."""

    colon: object  # a ':' in code at depth 0
    header_colon: object  # ... the one that ends a compound statement's header


def modes(s, ids, c) -> tuple[dict, Char]:
    """Strings, comments and continuations: mode, quote, fresh, escaped, run."""
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
    closes_string = (in_string & ((mode == CODE) | (mode == AFTER_EMPTY)) & (c != NEWLINE)) | (
        (s.mode == TRIPLE) & (mode == CODE)
    )
    fields = dict(
        mode=mode,
        quote=tf.where(code & is_quote, its_quote, s.quote),
        fresh=tf.cast(code & is_quote, tf.int32),
        escaped=tf.where(in_string | (s.mode == TRIPLE), string_escaped, zeros),
        run=tf.where(s.mode == TRIPLE, triple_run, zeros),
    )
    return fields, Char(
        ids=ids,
        c=c,
        zeros=zeros,
        minus=-tf.ones_like(c),
        code=code,
        layout=code | comment_ends,
        significant=code & ~any_of(c, (SPACE, TAB, NEWLINE, HASH)),
        closes_string=closes_string,
    )


def brackets(s, char: Char) -> dict:
    """depth and stack: a bracket opens (up to MAX_DEPTH) or closes the last one opened."""
    c = char.c
    opening = char.code & any_of(c, (OPEN1, OPEN2, OPEN3)) & (s.depth < MAX_DEPTH)
    closing = char.code & any_of(c, (CLOSE1, CLOSE2, CLOSE3)) & (s.depth > 0)
    slot = tf.range(MAX_DEPTH)[None, :] == s.depth[:, None]  # (N, D)
    stack = tf.where(opening[:, None] & slot, (c - OPEN1)[:, None], s.stack)
    depth = s.depth + tf.cast(opening, tf.int32) - tf.cast(closing, tf.int32)
    return dict(depth=depth, stack=stack)


def indentation(s, char: Char) -> tuple[dict, Lines]:
    """Lines and indentation: column, levels, count, line_start, opener."""
    c, zeros = char.c, char.zeros
    line_end = char.layout & (c == NEWLINE) & (s.depth == 0)
    starts_statement = char.significant & (s.line_start > 0)
    column = tf.where(
        line_end,
        zeros,
        tf.where(
            char.layout & (s.line_start > 0) & (c == SPACE),
            s.column + 1,
            tf.where(
                char.layout & (s.line_start > 0) & (c == TAB), (s.column // 8 + 1) * 8, s.column
            ),
        ),
    )
    current = top(s.levels, s.count)
    push = starts_statement & (s.opener > 0) & (s.column > current) & (s.count < MAX_LEVELS)
    levels = tf.where(
        push[:, None] & (tf.range(MAX_LEVELS)[None, :] == s.count[:, None]),
        s.column[:, None],
        s.levels,
    )
    # A dedent keeps the levels at or left of the column (level 0 always stays).
    kept = tf.reduce_sum(
        tf.cast(
            (tf.range(MAX_LEVELS)[None, :] < s.count[:, None]) & (s.levels <= s.column[:, None]),
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
    opener = tf.where(char.significant, tf.cast((c == COLON) & (s.depth == 0), tf.int32), s.opener)
    fields = dict(column=column, levels=levels, count=count, line_start=line_start, opener=opener)
    return fields, Lines(line_end, starts_statement, push, count)


def names(s, char: Char, lines: Lines, codes) -> tuple[dict, Name]:
    """The name (hashed as it is read, ``codes``: each id's code point) or number being read:
    word, first, number; and which name, if any, a character ends."""
    c, code, zeros = char.c, char.code, char.zeros
    is_word = (c == LETTER) | (c == DIGIT)
    code_point = tf.cast(tf.gather(tf.constant(codes), char.ids), tf.int64)
    no_word = -tf.ones_like(code_point)
    starts_name = code & (c == LETTER) & (s.word < 0) & (s.number == 0)
    in_name = code & (s.word >= 0) & is_word
    word = tf.where(
        starts_name,
        code_point,
        tf.where(in_name, (s.word * HASH_BASE + code_point) % HASH_MOD, no_word),
    )
    first = tf.where(
        starts_name, tf.cast(lines.starts_statement, tf.int32), tf.where(in_name, s.first, zeros)
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
    fields = dict(word=word, first=first, number=number)
    return fields, Name(no_word, starts_name, word_ends, ended, keyword)


def statement(s, char: Char, lines: Lines, name: Name, header_moves) -> tuple[dict, Colons]:
    """What the statement has had at depth 0: needs_colon, header, lambdas, assigned,
    annotated."""
    c, code, zeros = char.c, char.code, char.zeros
    compound = any_of(name.keyword, hashes(COMPOUND))
    colon = code & (c == COLON) & (s.depth == 0)
    needs_colon = tf.where(
        lines.line_end | colon, zeros, tf.where(compound, tf.ones_like(c), s.needs_colon)
    )
    header = header_state(
        s.header, c, code, name.word_ends & (c == SPACE), name.keyword, s.depth, header_moves
    )
    lambdas = s.lambdas + tf.cast((name.ended == word_hash("lambda")) & (s.depth == 0), tf.int32)
    header_colon = colon & ((s.needs_colon > 0) | compound)  # "try:" ends its word too
    lambda_colon = colon & ~header_colon & (lambdas > 0)
    fresh_statement = lines.line_end | header_colon
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
    fields = dict(
        needs_colon=needs_colon,
        header=header,
        lambdas=lambdas,
        assigned=assigned,
        annotated=annotated,
    )
    return fields, Colons(colon, header_colon)


def header_state(header, c, code, word_then_space, keyword, depth, header_moves):
    """The next header state (HEADER_RULES; ``header_moves``: ``header_tables``' second); a
    def or class starts one."""
    moved = tf.gather_nd(tf.constant(header_moves), tf.stack([header, c], axis=1))
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
    started = tf.zeros_like(c)
    for word, start in reversed(HEADER_OF_STATEMENT):
        started = tf.where(keyword == word_hash(word), start, started)
    return tf.where(word_then_space & (started > 0), started, tf.where(code, moved, header))


def operands(s, char: Char, lines: Lines, name: Name, trie_moves) -> dict:
    """operand: after a name that is no keyword, a closing bracket or a string (and the
    blanks after it); spelling: the node of the trie (``trie_moves``) a name is spelt in."""
    c, code = char.c, char.code
    blank = (c == SPACE) | (c == TAB)
    operand = tf.cast(
        (name.word_ends & ~any_of(name.ended, hashes(KEYWORDS)) & blank)
        | (code & any_of(c, (CLOSE1, CLOSE2, CLOSE3)))
        | char.closes_string
        | (code & (s.operand > 0) & blank & (s.word < 0)),
        tf.int32,
    )
    spell_from = tf.where(
        s.spelling >= 0,
        s.spelling,
        tf.where(
            name.starts_name & (s.operand > 0),
            operand_root(s),
            tf.where(name.starts_name & lines.starts_statement & after_try(s), ROOT_TRY, -1),
        ),
    )
    spelling = tf.where(
        code & (spell_from >= 0),
        tf.gather_nd(
            tf.constant(trie_moves), tf.stack([tf.maximum(spell_from, 0), char.ids], axis=1)
        ),
        char.minus,
    )
    return dict(operand=operand, spelling=spelling)


def clauses(s, lines: Lines, name: Name) -> dict:
    """kinds: each level's last statement, K_OTHER when one starts, then what its first word
    says (KIND_OF_STATEMENT); before: the kind this statement follows at its level."""
    keyword = name.keyword
    level = lines.count - 1
    at_level = tf.range(MAX_LEVELS)[None, :] == level[:, None]  # (N, L)
    kind_here = tf.reduce_sum(tf.where(at_level, s.kinds, 0), axis=1)
    before = tf.where(lines.starts_statement, tf.where(lines.push, K_OTHER, kind_here), s.before)
    clause = tf.where((keyword == word_hash("else")) & (s.before == K_EXCEPT), K_TRY_ELSE, K_OTHER)
    for kind, words in reversed(KIND_OF_STATEMENT):
        clause = tf.where(one_of(keyword, hashes(words)), kind, clause)
    written = lines.starts_statement | (keyword >= 0)
    kinds = tf.where(
        at_level & written[:, None], tf.where(keyword >= 0, clause, K_OTHER)[:, None], s.kinds
    )
    return dict(kinds=kinds, before=before)


def context(s, char: Char, lines: Lines, name: Name, colons: Colons) -> dict:
    """statement (its first word), previous and last (characters), lone_equals, and the
    conditional expressions still waiting for their else."""
    c, code, minus, zeros = char.c, char.code, char.minus, char.zeros
    colon, header_colon = colons
    line_end, keyword = lines.line_end, name.keyword
    # (A one-line body after a compound statement's ':' is a statement of its own.)
    statement = tf.where(
        line_end | header_colon,
        name.no_word,
        tf.where(
            keyword >= 0,
            keyword,
            tf.where(lines.starts_statement, name.no_word, s.statement),
        ),
    )
    attribute_dot = (c == DOT) & (
        (s.word >= 0) | any_of(s.previous, (CLOSE1, CLOSE2, CLOSE3, QUOTE1, QUOTE2))
    )
    previous = tf.where(
        code,
        tf.where(attribute_dot, ATTRIBUTE_DOT, c),
        tf.where(char.closes_string, QUOTE1, minus),
    )
    lone_equals = tf.cast(
        code
        & (c == EQUALS)
        & (s.depth == 0)
        & ~any_of(s.previous, (EQUALS, COLON, STAR, SLASH, OPERATOR)),
        tf.int32,
    )
    soft_block = any_of(s.statement, hashes(("match", "case")))  # match x: / case y:
    last = tf.where(
        line_end,
        minus,
        tf.where(
            char.significant,
            tf.where(colon & ~header_colon & ~soft_block, OPEN_COLON, c),
            tf.where(char.closes_string, QUOTE1, s.last),
        ),
    )
    # A conditional expression's if and else: at depth 0, past the statement's first
    # word (a comprehension's if is in brackets; a case's is its guard).
    spelt = name.word_ends & (s.depth == 0) & (s.first == 0) & ~soft_block
    conditionals = tf.where(
        line_end,
        zeros,
        tf.maximum(
            s.conditionals
            + tf.cast(spelt & (name.ended == word_hash("if")), tf.int32)
            - tf.cast(spelt & (name.ended == word_hash("else")), tf.int32),
            0,
        ),
    )
    return dict(
        statement=statement,
        previous=previous,
        lone_equals=lone_equals,
        last=last,
        conditionals=conditionals,
    )
