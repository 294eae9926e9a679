"""Python's grammar as an LALR table, and a parser that steps one token at a time.

The grammar is ``kerasgen/python.lark`` (lark's Python 3 grammar with the rules where
it was looser or stricter than CPython's changed: its header lists them); ``lark``
builds its LALR table once per process. ``Grammar.feed`` takes one terminal on a
stack of parser states and returns the new stack, or None where Python's grammar
has no place for it: the parser kerasgen's exact constraint
(``kerasgen.python_prefix``) steps alongside the text it draws. No tree is built:
only whether the tokens so far still begin a module.

Terminals are named as lark names them: ``NAME``, ``STRING``, ``LONG_STRING``,
the number kinds, ``_NEWLINE``, ``_INDENT``, ``_DEDENT``, and one per keyword
and operator (``Grammar.terminals`` maps their text to the name).
"""

from __future__ import annotations

import functools
import keyword

# Python's operators and delimiters, longest first (the tokenizer takes the longest).
OPERATORS = sorted(
    [
        "+",
        "-",
        "*",
        "**",
        "/",
        "//",
        "%",
        "@",
        "<<",
        ">>",
        "&",
        "|",
        "^",
        "~",
        ":=",
        "<",
        ">",
        "<=",
        ">=",
        "==",
        "!=",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        ".",
        ";",
        "=",
        "->",
        "+=",
        "-=",
        "*=",
        "/=",
        "//=",
        "%=",
        "@=",
        "&=",
        "|=",
        "^=",
        ">>=",
        "<<=",
        "**=",
        "...",
    ],
    key=len,
    reverse=True,
)
OPERATOR_PREFIXES = frozenset(op[:i] for op in OPERATORS for i in range(1, len(op) + 1)) | {"!"}
SOFT_KEYWORDS = ("match", "case", "_")  # names that are keywords only in some places


class Grammar:
    """The LALR table of Python's grammar: ``feed`` steps a stack one terminal on."""

    def __init__(self):
        from importlib import resources

        from lark import Lark
        from lark.parsers.lalr_analysis import Shift

        text = resources.files("kerasgen").joinpath("python.lark").read_text(encoding="utf-8")
        parser = Lark(text, parser="lalr", start="file_input")
        table = parser.parser.parser.parser.parse_table
        # state -> {symbol: next state (a shift or a goto) | (pop, nonterminal) (a reduce)}
        self.actions = {
            state: {
                symbol: arg if action is Shift else (len(arg.expansion), arg.origin.name)
                for symbol, (action, arg) in row.items()
            }
            for state, row in table.states.items()
        }
        self.start = (table.start_states["file_input"],)
        self.end = table.end_states["file_input"]  # where "$END" is accepted
        # Keyword and operator text -> terminal name.
        self.terminals = {
            t.pattern.value: t.name for t in parser.terminals if t.pattern.type == "str"
        }
        self._cache: dict = {}

    def feed(self, stack: tuple, terminal: str) -> tuple | None:
        """``stack`` after ``terminal`` (its reductions, then its shift), or None when the
        grammar refuses it there."""
        key = (stack, terminal)
        cached = self._cache.get(key, False)
        if cached is not False:
            return cached
        actions = self.actions
        new = list(stack)
        while True:
            if new[-1] == self.end and terminal == "$END":
                new = tuple(new)
                break
            action = actions[new[-1]].get(terminal)
            if action is None:
                new = None
                break
            if isinstance(action, int):
                new.append(action)
                new = tuple(new)
                break
            pop, nonterminal = action
            if pop:
                del new[-pop:]
            new.append(actions[new[-1]][nonterminal])
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[key] = new
        return new

    def accepts(self, stacks: tuple, terminal: str) -> bool:
        """Whether any of ``stacks`` takes ``terminal`` next."""
        return any(self.feed(s, terminal) is not None for s in stacks)

    def word_terminals(self, word: str) -> tuple[str, ...]:
        """The terminals a complete identifier may be: a keyword's own only; a soft
        keyword's or else NAME."""
        own = self.terminals.get(word)
        if keyword.iskeyword(word):
            return (own,) if own else ()
        if word in SOFT_KEYWORDS and own:
            return (own, "NAME")
        return ("NAME",)

    @functools.cached_property
    def keywords(self) -> dict[str, str]:
        """Keyword text (hard and soft) -> terminal, for partial words."""
        return {w: t for w, t in self.terminals.items() if w.isidentifier()}


@functools.lru_cache(maxsize=1)
def grammar() -> Grammar:
    """The process's one ``Grammar`` (building the table takes about a second)."""
    return Grammar()
