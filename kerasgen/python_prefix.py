"""Whether a text still begins a Python module: the exact constraint, one character at a time.

``PythonPrefix`` reads text a character at a time and answers, for each, whether the
text with it is still the beginning of some module Python compiles
(``feed(c)``: the state after ``c``, or None). It is Python's tokenizer and parser
stepped together, on the host:

- a lexer in the shape of Python's own (kerasgen-written): names, numbers,
  operators (longest first), strings of every prefix and both quote lengths,
  comments, backslash continuations, the indentation of each logical line
  (``_INDENT``/``_DEDENT`` against the levels open), line breaks inside brackets;
  a token that is still growing is allowed while some token of the grammar
  could still start with it (``de`` for ``def`` or a name);
- the grammar's LALR table (``kerasgen.python_grammar``) taking each token as it
  ends; a hard keyword is never a name, a soft one (``match``, ``case``, ``_``)
  either, both kept while both parse;
- what the compiler refuses beyond the grammar, followed on the way: ``return``
  and ``yield`` outside a function, ``await`` and ``async for``/``with`` outside
  an ``async def``, ``break``/``continue`` outside a loop, ``nonlocal`` outside a
  function, a parameter named twice; each string literal (f-strings, bytes,
  escapes) is compiled when it closes, and an f-string's ``}`` must close a
  replacement field that compiles.

What it does not follow (``compile`` still decides at the end of a block):
the grammar's own gaps (lark's grammar is a little looser than CPython's: a
positional argument after a keyword one, ``x := 1`` as a statement, assignment
to a call), and the rare rules that depend on text further on. One layout choice
is declared: a line that begins with a backslash continuation.
"""

from __future__ import annotations

import ast
import functools
import keyword
import re
import tokenize
import warnings

from kerasgen import python_rules
from kerasgen.python_grammar import OPERATOR_PREFIXES, OPERATORS, grammar
from kerasgen.python_params import DEFS, follow_params, params_refuse

STRING_PREFIXES = frozenset({"r", "u", "f", "b", "br", "rb", "fr", "rf"})  # in any case
NUMBER = re.compile(tokenize.Number)
MAX_NUMBER = 200  # characters in a number literal (a layout choice: the check grows with it)
# Operators that begin no longer one.
WHOLE_OPERATORS = frozenset(
    op for op in OPERATORS if not any(o != op and o.startswith(op) for o in OPERATORS)
)
SCOPES = DEFS + ("class",)
# The block a compound statement's first word opens (for the checks above).
OPENS = {"def": "def", "class": "class", "for": "loop", "while": "loop"}
DEL_TOKENS = frozenset({".", "(", "[", ",", ";"})  # operators at depth 0 of a del statement
# At depth 0 of a simple statement (walrus: refused there).
ASSIGNMENTS = frozenset(o for o in OPERATORS if o[-1] == "=" and o not in {"==", "<=", ">=", "!="})
MAX_STACKS = 4  # parses kept at once (a soft keyword read both ways)
# PythonPrefix.line before a line's first token: (tokens, the block its ":" opens, first word,
# where the text after a compound's ":" begins (0: none), colon last, a lambda at depth 0).
NO_LINE = (0, None, "", 0, False, False)


@functools.lru_cache(maxsize=4096)
def _number_prefix(text: str) -> bool:
    """Whether some number literal of at most ``MAX_NUMBER`` characters begins with
    ``text``."""
    if len(text) > MAX_NUMBER:
        return False
    return any(NUMBER.fullmatch(text + end) for end in ("", "0", ".0", "0.0"))


def _number_kind(text: str) -> str | None:
    """The grammar's terminal for a complete number literal, None if it is not one."""
    if not NUMBER.fullmatch(text):
        return None
    low = text.lower()
    if low.endswith("j"):
        return "IMAG_NUMBER"
    if low.startswith(("0x", "0o", "0b")):
        return {"x": "HEX_NUMBER", "o": "OCT_NUMBER", "b": "BIN_NUMBER"}[low[1]]
    return "FLOAT_NUMBER" if ("." in low or "e" in low) else "DEC_NUMBER"


@functools.lru_cache(maxsize=4096)
def _parses(statement: str) -> bool:
    """Whether ``statement`` parses (an assignment's targets, checked at its ``=``)."""
    return _accepted(ast.parse, statement)


@functools.lru_cache(maxsize=8192)
def _compiles(expression: str) -> bool:
    """Whether ``expression`` compiles as one (a string literal, checked as it closes)."""
    return _accepted(lambda text: compile(text, "<string>", "eval", dont_inherit=True), expression)


def _accepted(check, text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            check(text)
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
            return False
    return True


class PythonPrefix:
    """The tokenizer and parser's state after some text (``feed`` one character on)."""

    # Every slot but memo decides what may follow (key()).
    __slots__ = (
        "brackets",  # the open brackets
        "comment_at_start",  # the comment began a line of its own
        "fors",  # (bracket depth, where its target begins) of each for still before its in
        "kinds",  # what opened each block: module, def, async def, class, loop, other
        "levels",  # the indentation of each open block, outermost first
        "lexeme",  # the token (or a line's indentation) read so far
        "line",  # the logical line (NO_LINE's fields)
        "line_kinds",  # blocks opened on this line by a compound statement's ":"
        "line_lambda",  # the line has a lambda
        "line_text",  # the logical line's text so far, from its first token
        "memo",  # terminal -> accepted, for the token being read
        "mode",  # start (indentation), line, name, number, op, string(2), comment, backslash
        "params",  # the parameter lists being read (Params)
        "pending",  # the kind of the block the next indent opens
        "prev",  # the last token's text
        "stacks",  # the parser's stacks (more than one while a soft keyword reads two ways)
        "string",  # an open string: (prefix, quote, triple, body, escaped, closing quotes)
        "token_start",  # where in line_text the token being read begins
    )

    def __init__(self):
        g = grammar()
        self.stacks = (g.start,)
        self.mode, self.lexeme = "start", ""
        self.levels, self.kinds = ("",), ("module",)
        self.brackets = ""
        self.line = NO_LINE
        self.line_lambda, self.line_text, self.token_start = False, "", 0
        self.line_kinds, self.pending, self.params, self.prev = (), None, (), ""
        self.fors = ()
        self.string, self.comment_at_start, self.memo = None, False, {}

    def copy(self) -> PythonPrefix:
        new = PythonPrefix.__new__(PythonPrefix)
        for name in PythonPrefix.__slots__:
            setattr(new, name, getattr(self, name))
        return new

    def feed(self, c: str) -> PythonPrefix | None:
        """The state after ``c``, or None when no module begins with the text and ``c``."""
        new = self.copy()
        if not _advance(new, c):
            return None
        new.line_text = "" if new.mode == "start" else new.line_text + c
        return new

    def read(self, text: str) -> PythonPrefix | None:
        """The state after ``text``, or None at its first character no module allows."""
        state = self
        for c in text:
            state = state.feed(c)
            if state is None:
                return None
        return state

    def key(self) -> tuple:
        """Everything that decides what may follow (equal keys: the same characters
        allowed next)."""
        # The line's text decides only whether an assignment (an operator being read), a
        # del statement or a for's target may end; leaving it out otherwise lets states recur.
        text = self.mode == "op" or self.line[2] == "del" or bool(self.fors)
        return tuple(getattr(self, name) for name in (KEY if text else KEY_NO_TEXT))

    def complete(self) -> bool:
        """Whether the text read is a whole module: it ends a line outside any bracket
        or string, and every block open can close there."""
        if self.mode != "start" or self.brackets:
            return False
        state = self.copy()
        for _ in self.levels[1:]:
            if not _feed_only(state, "_DEDENT"):
                return False
        return state.accepts("$END")

    def accepts(self, terminal: str) -> bool:
        memo = self.memo
        if terminal not in memo:
            memo[terminal] = grammar().accepts(self.stacks, terminal)
        return memo[terminal]


def refused_at(text: str) -> int | None:
    """The index of the first character of ``text`` no module allows there (None: all
    allowed)."""
    state = PythonPrefix()
    for i, c in enumerate(text):
        state = state.feed(c)
        if state is None:
            return i
    return None


# -- one character --


def _advance(st: PythonPrefix, c: str) -> bool:
    mode = st.mode
    if mode == "line":
        if c in " \t\f":
            return True
        if c == "\n":
            return _newline(st)
        if c == "#":
            st.mode, st.comment_at_start = "comment", False
            return True
        if c == "\\":
            st.mode = "backslash"
            return True
        return _begin(st, c)
    if mode == "start":
        if c in " \t\f":
            st.lexeme += c
            return True
        if c == "\n":
            st.lexeme = ""
            return True
        if c == "#":
            st.mode, st.comment_at_start = "comment", True
            return True
        if c == "\\" or not _indent(st):
            return False
        st.mode = "line"
        return _begin(st, c)
    if mode == "name":
        return _name_char(st, c)
    if mode == "number":
        return _number_char(st, c)
    if mode == "op":
        return _op_char(st, c)
    if mode in ("string", "string2"):
        return _string_char(st, c)
    if mode == "comment":
        if c != "\n":
            return True
        if st.comment_at_start:
            st.mode, st.lexeme = "start", ""
            return True
        st.mode = "line"
        return _newline(st)
    # backslash: only a line break may follow
    st.mode = "line"
    return c == "\n"


def _begin(st: PythonPrefix, c: str) -> bool:
    """``c`` begins a token."""
    st.memo, st.token_start = {}, len(st.line_text)
    if c.isidentifier():
        st.mode, st.lexeme = "name", c
        return _name_viable(st)
    if c.isdigit():
        st.mode, st.lexeme = "number", c
        return st.accepts("DEC_NUMBER")
    if c in "'\"":
        return _open_string(st, "", c)
    if c in OPERATOR_PREFIXES:
        st.mode, st.lexeme = "op", c
        return _op_viable(st) and _op_ended(st)
    return False


def _op_ended(st: PythonPrefix) -> bool:
    """An operator no longer one begins with is taken at once (so a ``)`` the grammar
    refuses is refused itself, not the character after it)."""
    text = st.lexeme
    if text not in WHOLE_OPERATORS:
        return True
    if not _emit(st, (grammar().terminals[text],), text):
        return False
    st.mode = "line"
    return True


def _name_viable(st: PythonPrefix) -> bool:
    word = st.lexeme
    if st.accepts("NAME"):
        return True
    if word.lower() in STRING_PREFIXES and (st.accepts("STRING") or st.accepts("LONG_STRING")):
        return True
    return any(
        k.startswith(word) and st.accepts(t) and _allowed_here(st, k, (t,))
        for k, t in grammar().keywords.items()
    )


def _name_char(st: PythonPrefix, c: str) -> bool:
    if ("a" + c).isidentifier():
        st.lexeme += c
        return _name_viable(st)
    if c in "'\"" and st.lexeme.lower() in STRING_PREFIXES:
        return _open_string(st, st.lexeme, c)
    word = st.lexeme
    if not _emit(st, grammar().word_terminals(word), word):
        return False
    st.mode = "line"
    return _advance(st, c)


def _number_char(st: PythonPrefix, c: str) -> bool:
    if _number_prefix(st.lexeme + c):
        st.lexeme += c
        return True
    kind = _number_kind(st.lexeme)
    # A number runs into no name: "1if" is refused, "1 if" is the layout.
    if kind is None or ("a" + c).isidentifier() or not _emit(st, (kind,), st.lexeme):
        return False
    st.mode = "line"
    return _advance(st, c)


def _op_viable(st: PythonPrefix) -> bool:
    text, terminals = st.lexeme, grammar().terminals
    if text == "." and st.accepts("FLOAT_NUMBER"):
        return True  # a number (".5")
    if text == ".." and _feed_only(st.copy(), "DOT", "DOT"):
        return True  # two dots: two DOT tokens (a relative import)
    return any(
        op.startswith(text)
        and st.accepts(terminals[op])
        and _allowed_here(st, op, (terminals[op],))
        for op in OPERATORS
    )


def _op_char(st: PythonPrefix, c: str) -> bool:
    text = st.lexeme
    if text + c in OPERATOR_PREFIXES:
        st.lexeme += c
        return _op_viable(st) and _op_ended(st)
    if text == "." and c.isdigit():
        st.mode, st.lexeme = "number", text + c
        return st.accepts("FLOAT_NUMBER")
    terminals = grammar().terminals
    if text == "..":  # two dots: two tokens (only "..." is one)
        ok = _emit(st, ("DOT",), ".") and _emit(st, ("DOT",), ".")
    else:
        ok = text in terminals and _emit(st, (terminals[text],), text)
    if not ok:
        return False
    st.mode = "line"
    return _advance(st, c)


# -- strings --


def _open_string(st: PythonPrefix, prefix: str, quote: str) -> bool:
    if not (st.accepts("STRING") or st.accepts("LONG_STRING")):
        return False
    st.mode, st.string = "string", (prefix, quote, False, "", False, 0)
    return True


def _string_char(st: PythonPrefix, c: str) -> bool:
    prefix, quote, triple, body, escaped, run = st.string
    if st.mode == "string2":  # two quotes: an empty string, or a triple-quoted one opening
        if c == quote:
            st.mode, st.string = "string", (prefix, quote, True, "", False, 0)
            return True
        if not _close_string(st, prefix + quote * 2, "STRING"):
            return False
        return _advance(st, c)
    if "b" in prefix.lower() and ord(c) > 127:
        return False
    if escaped:
        st.string = (prefix, quote, triple, body + c, False, 0)
        return True
    if c == "\\":
        st.string = (prefix, quote, triple, body + c, True, 0)
        return True
    opening = quote * (3 if triple else 1)
    if not triple:
        if c == "\n":
            return False
        if c == quote:
            if not body:
                st.mode = "string2"
                return True
            return _close_string(st, prefix + opening + body + quote, "STRING")
    elif c == quote:
        if run == 2:
            return _close_string(st, prefix + opening + body + c, "LONG_STRING")
        st.string = (prefix, quote, triple, body + c, False, run + 1)
        return True
    # An f-string's "}" closes a replacement field that compiles (in one that holds no
    # string so far: those are checked as the f-string closes).
    if c == "}" and "f" in prefix.lower() and "'" not in body and '"' not in body:
        head = prefix + opening + body + "}"
        if not any(_compiles(head + more + opening) for more in ("", "}", "}}")):
            return False
    st.string = (prefix, quote, triple, body + c, False, 0)
    return True


def _close_string(st: PythonPrefix, text: str, terminal: str) -> bool:
    if not _compiles(text) or not _emit(st, (terminal,), text):
        return False
    st.mode, st.string = "line", None
    return True


# -- lines and blocks --


def _newline(st: PythonPrefix) -> bool:
    """A line break between tokens."""
    if st.brackets:
        return True  # inside brackets: no logical line ends
    if st.line[0] == 0:
        st.mode, st.lexeme = "start", ""
        return True
    colon_last = st.line[4]
    if st.line[2] == "del" and not _parses(st.line_text):
        return False  # CPython's parser checks what is deleted (see _allowed_here)
    if not _emit(st, ("_NEWLINE",), "\n"):
        return False
    st.pending = st.line_kinds[-1] if colon_last and st.line_kinds else None
    st.line, st.line_kinds, st.params, st.line_lambda, st.fors = NO_LINE, (), (), False, ()
    st.mode, st.lexeme = "start", ""
    return True


def _indent(st: PythonPrefix) -> bool:
    """The first token of a line: its indentation against the open blocks."""
    here, levels = st.lexeme, st.levels
    if here == levels[-1]:
        return True
    if here.startswith(levels[-1]):
        if not _feed_only(st, "_INDENT"):
            return False
        st.levels, st.kinds = levels + (here,), st.kinds + (st.pending or "other",)
        return True
    if here not in levels:
        return False
    while st.levels[-1] != here:
        if not _feed_only(st, "_DEDENT"):
            return False
        st.levels, st.kinds = st.levels[:-1], st.kinds[:-1]
    return True


def _feed_only(st: PythonPrefix, *terminals: str) -> bool:
    g = grammar()  # the parser alone takes ``terminals``, one after the other
    for terminal in terminals:
        new = tuple(n for n in (g.feed(s, terminal) for s in st.stacks) if n is not None)
        if not new:
            return False
        st.stacks, st.memo = new, {}
    return True


def _emit(st: PythonPrefix, terminals, text: str) -> bool:
    """Give the parser the token ``text`` (one of ``terminals``); False if nothing takes it
    or the compiler would refuse it here."""
    g, new = grammar(), []
    for stack in st.stacks:
        for terminal in terminals:
            fed = g.feed(stack, terminal)
            if fed is not None and fed not in new:
                new.append(fed)
    if not new or not _allowed_here(st, text, terminals):
        return False
    st.stacks, st.memo = tuple(new[:MAX_STACKS]), {}
    _follow(st, text, "NAME" in terminals)
    return True


def _scope(st: PythonPrefix) -> str:
    """The innermost def, async def or class around the text (module: none)."""
    for kind in reversed(st.kinds + st.line_kinds):
        if kind in SCOPES:
            return kind
    return "module"


def _allowed_here(st: PythonPrefix, text: str, terminals) -> bool:
    """The compiler's rules on where a word may stand, and a parameter named twice."""
    if text == "return":
        return _scope(st) in DEFS
    if text == "yield":  # in a function, or a lambda's body
        return _scope(st) in DEFS or st.line_lambda
    if text == "await" or (st.prev == "async" and text == "with"):
        return _scope(st) == "async def"
    if st.prev == "async" and text == "for" and not st.brackets:  # (async generator
        return _scope(st) == "async def"  # expressions may stand in any function)
    if text in ("break", "continue"):
        for kind in reversed(st.kinds + st.line_kinds):
            if kind == "loop":
                return True
            if kind in SCOPES:
                return False
        return False
    body = st.line[3]  # a compound statement's body on its line ("if x: y = 1")
    simple = not st.brackets and (st.line[2] not in COMPOUND or body)
    if simple and (text in ASSIGNMENTS or (text == ":" and not st.line_lambda)):
        # CPython's parser checks what is assigned to: a name, attribute, subscript or a
        # tuple or list of them (so "f() = ", "a, b=1, c = ", "x := 1" are refused), and
        # what is annotated ("a, b: ", "f(): ").
        statement = st.line_text[body : st.token_start].lstrip() + text + " 0"
        return text != ":=" and (st.line_lambda or _parses(statement))
    if simple and st.line[2] == "del" and st.line[0] and text not in DEL_TOKENS:
        return text not in OPERATORS and not keyword.iskeyword(text)  # ... and deleted
    if text == "in" and st.fors and st.fors[-1][0] == len(st.brackets):
        target = st.line_text[st.fors[-1][1] : st.token_start]  # ... and a for's target
        return _parses(f"for {target.strip()} in x: pass")
    if text == "nonlocal":
        return any(k in ("def", "async def") for k in st.kinds + st.line_kinds)
    return not (st.params and params_refuse(st, text, terminals))


def _follow(st: PythonPrefix, text: str, is_name: bool) -> None:
    """Keep the brackets, the line's kind, the blocks its ``:`` opens and the parameter
    lists up to date after the token ``text``."""
    tokens, kind, first, colon_seen, _, lambda0 = st.line
    colon_last = False
    if tokens == 0:
        kind, first = ("async" if text == "async" else OPENS.get(text, "other")), text
    elif tokens == 1 and kind == "async":
        kind = {"def": "async def", "for": "loop"}.get(text, "other")
    if not st.brackets:
        if text == "lambda":
            lambda0 = True
        elif text == ":" and not colon_seen and not lambda0 and first in COMPOUND:
            st.line_kinds += (kind,)
            colon_seen, colon_last = st.token_start + 1, True  # where its body's text begins
    follow_params(st, text, is_name, kind)
    depth = len(st.brackets)
    if text == "for":
        st.fors += ((depth, st.token_start + 3),)
    elif st.fors and (st.fors[-1][0] > depth or (text == "in" and st.fors[-1][0] == depth)):
        st.fors = st.fors[:-1]
    st.line = (tokens + 1, kind, first, colon_seen, colon_last, lambda0)
    if text in "([{":
        st.brackets += text
    elif text in ")]}":
        st.brackets = st.brackets[:-1]
    st.prev = text


# The first words of compound statements (the soft keywords too).
COMPOUND = frozenset((*python_rules.COMPOUND, "match", "case"))


KEY = tuple(name for name in PythonPrefix.__slots__ if name != "memo")
KEY_NO_TEXT = tuple(name for name in KEY if name not in ("line_text", "token_start"))
