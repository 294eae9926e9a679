"""The exact Python constraint's reader: where it refuses a character, that real Python (as
the corpus writes it, and as people write it) is never refused, and that what it lets
through compiles once complete."""

import os
import random
import sysconfig

import pytest

from kerasgen.python_prefix import PythonPrefix, refused_at
from kerasgen.python_syntax import compiles

# (text, the index of the first character refused, None: every one allowed). A word is
# refused at the character that ends it: "return" could still become "returns".
CASES = [
    ("x = 1 +", None),
    ("x + * y", 4),
    ("x = (1, 2]", 9),
    ("if x = ", 6),
    ("if x == 1:\n    y\n", None),
    ("if x:\ny", 6),
    ("x = 1\n    y", 10),
    ("if x:\n    y\n  z", 14),
    ("def f(a, a)", 10),
    ("lambda x, x: 0", 11),
    ("def f(a, b=1, *c, d, **e):\n    return a\n", None),
    ("def f(a=1, b", None),  # b=... may follow
    ("def f(a=1, b)", 12),
    ("def f(a=1, *, b, c=2, **d):\n    pass\n", None),
    ("lambda a=1, b: 0", 13),
    ("f(a=1, b)", 8),
    ("f(**a, *b)", 8),  # "**b" may follow
    ("f(**a, *)", 8),
    ("f(a, *b, c, d=1, *e, **g, h=2)\n", None),
    ("return ", 6),
    ("class A:\n    yield ", 18),
    ("def f():\n    yield 1\n", None),
    ("x = lambda: (yield)\n", None),
    ("break\n", 5),
    ("while x:\n    break\nelse:\n    continue\n", 37),
    ("for x in y:\n    if x:\n        continue\n", None),
    ("def f():\n    await x", 18),
    ("async def f():\n    await x\n    async for a in b:\n        pass\n", None),
    ("def f():\n    async with x:", 19),  # no "with" may follow there
    ("nonlocal x", 8),
    ("def f():\n    def g():\n        nonlocal x\n", None),
    ("try:\n    x\nz", 11),
    ("try:\n    x\nfinally:\n    pass\n", None),
    ("x = 1if y else 2", 5),  # a number runs into no name (the layout declared)
    ("x = 0x", None),
    ("x = 0xg", 6),
    ("x = 1e-", None),
    ("x = 1_000 + 0b1 + 0o7 + 1.5e3j + .5\n", None),
    ("x = 'a\nb'", 6),
    ("x = '''a\nb'''\n", None),
    ("x = b'\u00e9'", 6),
    ("x = f'{}'", 7),
    ("x = f'{a!r:>{w}}' + rb'\\d' + ''\n", None),
    ("from .. import a\nfrom ...b import c\n", None),
    ("import a.\n", 9),
    ("match x:\n    case [a, *rest] if a:\n        pass\n    case _:\n        pass\n", None),
    ("match = 1\ncase = 2\n_ = 3\n", None),
    ("print(x) y", 9),
    ("x = [i for i in y if i]\n", None),
    ("def", None),
    ("def 1", 4),
    ("@property\ndef f(self) -> int:\n    ...\n", None),
    ("x = (1,\n     # a comment\n     2)\n", None),
    ("x = 1 + \\\n    2\n", None),
    ("x = \\ 2", 5),
    ("with open(p) as (a, b):\n    pass\n", None),
]


@pytest.mark.parametrize("text,refused", CASES)
def test_where_it_refuses(text, refused):
    assert refused_at(text) == refused


def test_feed_leaves_the_state_it_reads_from_unchanged():
    state = PythonPrefix().read("def f(")
    assert state.feed("1") is None
    assert state.feed("a") is not None and state.read("a):\n    pass\n") is not None
    assert state.read(")") is not None  # the refusal above changed nothing


def _modules(names):
    stdlib = sysconfig.get_paths()["stdlib"]
    for name in names:
        with open(os.path.join(stdlib, name), encoding="utf-8") as f:
            yield name, f.read()


def test_real_python_is_never_refused():
    """Modules as people write them (comments, docstrings, line breaks in brackets,
    decorators, f-strings) and as the corpus writes them."""
    from kerasgen.python_corpus import reformat_python, strip_python

    names = ["json/encoder.py", "textwrap.py", "dataclasses.py", "asyncio/tasks.py"]
    for name, source in _modules(names):
        assert compiles(source)
        assert refused_at(source) is None, name
        written = reformat_python(strip_python(source))
        assert refused_at(written) is None, name


@pytest.mark.slow  # 300 random edits read and compiled (about 6 s)
def test_what_it_lets_through_compiles_once_complete():
    """Random edits of real code: a text every character of which it allows, and that
    ends at a line start with every block closed, compiles."""
    _, source = next(_modules(["textwrap.py"]))
    lines = source.split("\n")
    rng = random.Random(0)
    pieces = [
        "x",
        "(",
        ")",
        "[",
        "]",
        ":",
        ",",
        "=",
        "+",
        "return",
        "yield",
        "break",
        "await",
        "nonlocal",
        "def",
        "lambda",
        "if",
        "else",
    ]
    checked = 0
    for _ in range(300):
        i = rng.randrange(len(lines))
        line = lines[i]
        at = rng.randrange(len(line) + 1)
        edited = line[:at] + rng.choice(pieces) + " " + line[at:]
        text = "\n".join(lines[:i] + [edited] + lines[i + 1 : i + 1]) + "\n"
        state = PythonPrefix().read(text)
        if state is not None and state.complete():
            checked += 1
            assert compiles(text), edited
    assert checked >= 20


@pytest.mark.parametrize(
    "text,refused",
    [
        ("f() = 1", 5),  # CPython's parser checks what is assigned to, at the "="
        ("f() += 1", 5),
        ("a, b=1, c = 2", 11),
        ("x := 1", 3),
        ("del f()\n", 7),
        ("del a - b", 6),  # what is deleted, at the first token that no target holds
        ("del a if b", 6),
        ("del a, (b - c)\n", 14),  # ... or, in brackets, at the line's end
        ("del (a, b), c.d()[0], 'e'[0]\n", None),
        ("a, b: int", 4),  # what is annotated, at its ":"
        ("f(): int", 3),
        ("x.y: int = 1\nz[0]: int\nf = lambda: 0\n", None),
        ("for f() in x: pass", 8),  # a for's target (statement or comprehension), at "in"
        ("[a for ...(b) in c]", 14),
        ("for a, (b, c) in x: [d for e.f[0] in g for h in i if j in k]\n", None),
        ("def f(): a, b and c = 1", 21),  # ... in a body on its compound statement's line
        ("if x: y = 1; f() = 2", 18),
        ("class A: x: int\nfor a in b: c[0] += 1\nif a: f = lambda: 0\n", None),
        ("from a import b, c,\n", 19),
        ("from a import (b, c,)\n", None),
        ("a[1], b.c = d = 1\nx: int = 3\nx += 1\ndel a[1], b.c\n", None),
        ("y = lambda a=1: a\nif (x := 1):\n    pass\n", None),
    ],
)
def test_what_cpythons_parser_checks_beyond_the_grammar(text, refused):
    assert refused_at(text) == refused
