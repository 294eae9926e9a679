"""The Python lexical constraint: what it forbids, that real code passes it, and samples
drawn under it that Python's own tokenizer reads without an error."""

import ast
import functools
import io
import json
import string
import tokenize

import numpy as np
import pytest
from runner import run

import kerasgen
from kerasgen.errors import ParameterError
from kerasgen.python_corpus import reformat_python, strip_python
from kerasgen.python_lexer import PythonLexer
from kerasgen.sampling import SamplingOptions
from kerasgen.vocab import Vocabulary
from kerasgen_cli.evaluate import _settings

CHARS = string.ascii_letters + string.digits + string.punctuation + " \n\t"
VOCAB = Vocabulary.from_text(CHARS)
LEXER = PythonLexer(VOCAB)


def allowed_after(text: str) -> set[str]:
    """The characters the constraint lets a sample draw after ``text``."""
    state = LEXER.initial(1)
    if text:
        state = LEXER.read(state, VOCAB.encode(text).astype(np.int32)[None, :])
    mask = LEXER.allowed(state).numpy()[0]
    return {VOCAB.decode([i]) for i in np.flatnonzero(mask)}


def forbidden_positions(text: str) -> list[int]:
    """Offsets of the characters of ``text`` that the constraint would not have drawn."""
    import tensorflow as tf

    if len(text) > SCAN_CHARS:
        raise ParameterError("text", f"must be at most {SCAN_CHARS} characters, got {len(text)}")
    # Blank lines after the text (always allowed) give every call one shape: one compile.
    ids = VOCAB.encode(text + "\n" * (SCAN_CHARS - len(text))).astype(np.int32)[None, :]
    return [int(i) for i in np.flatnonzero(~_scan()(tf.constant(ids)).numpy()[: len(text)])]


SCAN_CHARS = 16384


@functools.cache
def _scan():
    """Per character of ids (1, T): whether the constraint allowed it (one compiled loop)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, None], tf.int32)], jit_compile=True)
    def scan(ids):
        state = LEXER.initial(1)
        ok = tf.TensorArray(tf.bool, size=tf.shape(ids)[1])
        for t in tf.range(tf.shape(ids)[1]):
            ok = ok.write(t, tf.gather(LEXER.allowed(state)[0], ids[0, t]))
            state = LEXER.advance(state, ids[:, t])
        return ok.stack()

    return scan


# ---------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    "text, allowed, forbidden",
    [
        # Brackets: only the one that matches the last opened closes; none at depth 0.
        ("x = f(a[1", "]", ")}"),
        ("x = {1: (2", ")", "]}"),
        ("x = ", "([{", ")]}"),
        # No line break inside brackets (the corpus layout), so no comment or backslash either.
        ("x = f(a, ", ")", "\n#\\"),
        ("x = 1 ", "\n#\\", ""),
        # A one-line string cannot take a line break, unless it is escaped.
        ("x = 'ab", "'\"#)", "\n"),
        ("x = 'ab\\", "\n'", ""),
        ("x = \"it's", "\"'", "\n"),
        # Triple-quoted strings and comments take anything.
        ("x = '''ab", "\n)]'", ""),
        ("x = ''", "'\n", ""),  # a third quote opens a triple-quoted string
        ("x = 1  # f(", "\n)]'", ""),
        # After a backslash in code, only the line break.
        ("x = 1 + \\", "\n", " y)"),
        # After a line ending in ':' the block must be indented.
        ("if x:\n", " \n#", "yp'("),
        ("if x:\n  ", " y(", ""),
        # Without one, a statement starts only at a column on the indentation stack.
        ("if x:\n    y = 1\n", "z ", ""),
        ("if x:\n    y = 1\n  ", " \n#", "z("),
        ("if x:\n    y = 1\n    ", "z\n#", " "),
        ("def f():\n    if x:\n        y\n    ", "z ", ""),
        ("def f():\n    if x:\n        y\n      ", " ", "z("),
        ("def f():\n    if x:\n        y\n", "z ", ""),
        ("x = 1\n", "z\n#", " "),
        # A ':' inside brackets or a one-line body opens no block.
        ("x = d[1:]\n", "z", " "),
        ("if x: y = 1\n", "z", " "),
        # Blank and comment lines may stand anywhere.
        ("if x:\n    y\n\n", "z #\n", ""),
        # A compound statement's line ends only after its ':'; a simple statement takes a
        # ':' only to annotate its target, or for a lambda.
        ("if x", ":", "\n#"),
        ("x", ":", ""),
        ("x = a", "", ":"),
        ("f = lambda x", ":", ""),
        # def and class headers: a name, then (a def's) parameters' names.
        ("def ", "f_ ", "(1:"),
        ("def f", "(g", ":="),
        ("def f(", "a*/)", "1'(["),
        ("def f(a ", ",):=", "b.("),
        ("def f(a=g(1, 2), *", "*b,", ")"),
        ("class A", "(:", "=."),
        # After an operand, a name is one of the keywords that may follow one.
        ("x = a ", "inao+(", "bxf1"),
        ("x = a i", "fns", "mx(1"),
        ("x = f(a) ", "i", "b"),
        ("x = [a ", "fa", "b"),  # a comprehension's for, in brackets only
        ("from a i", "m", ""),  # from a import b
        ("raise a f", "r", ""),  # raise a from b
        ("with a ", "a", "b"),  # with a as b
        # After an attribute's '.', its name (a number's '.' is no attribute's).
        ("x = a.", "b_ ", "(1."),
        ("x = 1.", "5", ""),
        # A statement that begins with a keyword has no '=' of its own at depth 0.
        ("if a =", "=", " b"),
        ("return a =", "=", " b"),
        ("f = lambda x=", "1", ""),
        ("x = a =", " b", ""),
        ("if a", "=", ","),  # nor a tuple as its condition
        ("def f(a=", "1(", "="),
        # A keyword is no parameter's, function's or class's name: the name goes on.
        ("def f(None", "_", ",)="),
        ("def if", "_", "("),
        # A conditional expression at depth 0 has its else before the line ends; an else
        # after an operand has its if.
        ("x = a if b ", "e", "\n:#"),
        ("x = 0 if a else 1 if b ", "e", "\n"),
        ("x = a if b else c", "\n", ""),
        ("x = a ", "i", "e"),
        # A line does not end after '=', an operator or a ':' that opens no block.
        ("x =", " ", "\n#"),
        ("x = a +", " b", "\n#"),
        ("x:", " ", "\n"),
        ("f = lambda:", " ", "\n"),
        ("x = ...", "\n", ""),
        ("from a import *", "\n", ""),
        ("match x:", "\n", ""),
        # Only a name, attribute or subscript is annotated.
        ("x[1]", ":", ""),
        ("f(x)", "", ":"),
        # A number's letters.
        ("x = 28.", "5e", "rz"),
        ("x = 0x", "f", "g"),
        # A one-line body is a statement of its own.
        ("if a: b =", " 1", ""),
        ("if a: b", ",", ""),
        # A try's body is followed by except or finally at the try's column, never a dedent.
        ("try:\n    x\n", "ef \n#", "xi(@"),
        ("try:\n    x\nexcept E:\n    y\n", "xef", ""),
        ("def f():\n    try:\n        x\n", " ", "zd"),
        # A clause where its statement cannot take it does not end: the name goes on.
        ("x = 1\nelse", "_s", ": \n"),
        ("if x:\n    y\nelse", ":", ""),
    ],
)
def test_the_constraint_allows_and_forbids(text, allowed, forbidden):
    chars = allowed_after(text)
    assert set(allowed) <= chars, sorted(set(allowed) - chars)
    assert not set(forbidden) & chars, sorted(set(forbidden) & chars)


def test_real_python_as_the_corpus_writes_it_is_never_forbidden():
    import json as module_a
    import textwrap as module_b

    sources = [
        reformat_python(strip_python(open(m.__file__, encoding="utf-8").read()))
        for m in (module_a, module_b)
    ]
    written = (
        "class A(B, metaclass=M):\n\n    @property\n    def f(self, *a, **k) -> int:\n"
        "        if a:\n            return {'x': [1, (2, 3)]}[k['y']]\n"
        "        elif b'\\x00' in r'\\d+' + f\"{a!r}\" + '''q\n'r''' + \"\"\"\"\"\":\n"
        "            pass\n        else:\n            x = lambda y: y[1:] if y else ''\n"
        "        try:\n            pass\n        except E as e:  # ok\n\n"
        "            raise\n        return 1\n\n\nx = 'a\\'b' + \"c\\\"d\"  # (\n"
    )
    newer = (
        "from . import a\nfrom .b import c as d\n\n\n@dataclass(frozen=True)\n"
        "class P:\n    x: int = 0\n    y: list[int] = field(default_factory=list)\n\n"
        "    async def f(self, *, k=lambda a, b=1: a if b else -a, **kw) -> None:\n"
        "        async with a as b, c as d:\n            await g([x async for x in y])\n"
        "        match self.x:\n            case P(x=1) | [0, *_] if k:\n"
        "                pass\n            case _:\n                ...\n"
        "        if (n := len(kw)) > 1: n = 0x1F + 1.5e3j - 1_000 - .5\n"
        "        z = 0 if n == 1 else 1 if n else 2\n        for i, j in a, b:\n"
        "            del a[i], b[j]\n        else:\n            raise E('x') from None\n"
        "        return (yield from h()), not a, a not in b, a is not b\n\n\n"
        "_SHUTTING_DOWN = False\n"
    )
    for text in sources + [written, newer]:
        ast.parse(text)
        assert forbidden_positions(text) == []


def test_a_line_break_inside_brackets_is_the_one_layout_it_refuses():
    text = "x = f(\n    1,\n)\ny = 2\n"
    inside = [i for i, ch in enumerate(text) if ch == "\n"][:2]
    assert forbidden_positions(text) == inside


def closer_after(text: str) -> str | None:
    state = LEXER.read(LEXER.initial(1), VOCAB.encode(text).astype(np.int32)[None, :])
    closer = int(LEXER.closer(state).numpy()[0])
    return None if closer < 0 else VOCAB.decode([closer])


@pytest.mark.parametrize(
    "text, closer",
    [
        ("x = f(a, [1, 2", "]"),
        ("x = f(a, [1, 2]", ")"),
        ("d = {'a': (1", ")"),
        ("s = 'abc", "'"),
        ('s = f(b"x', '"'),
        ("if x == 1", ":"),
        ("for a in b", ":"),
        ("x = 1", None),
        ('x = """abc', None),  # a line break may stand in a triple-quoted string
        ("# (", None),
    ],
)
def test_the_character_that_ends_what_keeps_a_line_open(text, closer):
    assert closer_after(text) == closer


def test_a_line_break_the_model_draws_where_none_may_stand_closes_what_is_open():
    """The model decides where a line ends: its refused line break becomes the closer."""
    import tensorflow as tf

    from kerasgen.sampler import _line_end, _unpacked, row_settings

    texts = ["x = f(a, [1", "s = 'ab", "x = (1 + 2)", "y = g(2"]
    newline = VOCAB.token_id("\n")
    # Each row reads its text after blank lines (which change nothing): one width.
    ids = [VOCAB.encode(t).astype(np.int32) for t in texts]
    width = max(len(i) for i in ids)
    padded = np.stack([np.concatenate([[newline] * (width - len(i)), i]) for i in ids])
    state = LEXER.read(LEXER.initial(len(texts)), padded)
    logits = np.full((len(texts), len(VOCAB)), -10.0, np.float32)
    logits[:, newline] = 10.0  # the model all but certainly ends the line
    logits[1, newline] = -10.0  # ... but in row 1, which goes on with "c"
    logits[1, VOCAB.token_id("c")] = 10.0
    options = SamplingOptions(seed=1, constrain="python")
    s = row_settings(options, len(texts))
    ints = np.stack([s["mode"], s["top_k"], s["row"], s["constrained"].astype(np.int32)], 1)
    rows = _unpacked(ints, np.stack([s["temperature"], s["top_p"]], 1), s["seed"])
    drawn = tf.fill([len(texts)], VOCAB.token_id("0"))  # what the masked draw took
    sampler = type("Sampler", (), {"space_id": VOCAB.token_id(" "), "glue": None})
    got = _line_end(
        LEXER,
        state,
        tf.constant(logits),
        tf.constant(padded[:, -1]),
        0,
        rows,
        options.features,
        sampler,
        LEXER.allowed(state),
        drawn,
    )
    # "]" closes the list; row 1 keeps its draw, and so does row 2, where a line break may
    # stand; ")" closes the call.
    assert [VOCAB.decode([int(i)]) for i in got.numpy()] == ["]", "0", "0", ")"]


# ---------------------------------------------------------------- samples drawn under it


def lexical_errors(text: str) -> list[str]:
    """What Python's tokenizer, and the block structure it implies, find wrong in ``text``
    (complete lines only; a statement the end of the text cuts off is not an error)."""
    text = text[: text.rfind("\n") + 1]
    errors, brackets, tokens = [], [], []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            tokens.append(tok)
            if tok.type == tokenize.ERRORTOKEN and tok.string.strip() in ("'", '"'):
                errors.append(f"unterminated string at {tok.start}")
            elif tok.type == tokenize.OP and tok.string in "([{":
                brackets.append(tok.string)
            elif tok.type == tokenize.OP and tok.string in ")]}":
                if not brackets or "([{"[")]}".index(tok.string)] != brackets.pop():
                    errors.append(f"unmatched {tok.string} at {tok.start}")
            elif tok.type == tokenize.NL and brackets:
                errors.append(f"line break inside brackets at {tok.start}")
    except tokenize.TokenError:
        pass  # the text ends inside a triple-quoted string or a backslash-joined line
    except (IndentationError, SyntaxError) as e:
        errors.append(f"{type(e).__name__}: {e.msg}")
    # A block opens after a logical line ending in ':' and only there.
    significant = [t for t in tokens if t.type not in (tokenize.NL, tokenize.COMMENT)]
    for before, tok in zip(significant, significant[1:]):
        if before.type == tokenize.NEWLINE and tok.type != tokenize.ENDMARKER:
            ended_in_colon = significant[significant.index(before) - 1].string == ":"
            if (tok.type == tokenize.INDENT) != ended_in_colon:
                errors.append(f"indentation at {tok.start}")
    return errors


@pytest.fixture(scope="module")
def python_run(tmp_path_factory):
    """A tiny character model trained briefly on real Python: it writes lexical slips."""
    import json as module

    base = tmp_path_factory.mktemp("lexer")
    (base / "data").mkdir()
    source = reformat_python(strip_python(open(module.__file__, encoding="utf-8").read()))
    (base / "data" / "input.txt").write_text(source * 3, encoding="utf-8")
    save = base / "save"
    r = run(
        [
            "train",
            "--data_dir",
            str(base / "data"),
            "--save_dir",
            str(save),
            "--log_dir",
            str(base / "logs"),
            "--rnn_size",
            "32",
            "--num_layers",
            "1",
            "--batch_size",
            "8",
            "--seq_length",
            "32",
            "--num_epochs",
            "2",
            "--seed",
            "1",
            "--no_jit_compile",
        ]
    )
    assert r.exit_code == 0, r.output
    return save


@pytest.mark.slow  # 16 samples of 400 characters, three times (about 20 s); the exact
# constraint's server-rows test checks drawn text in the default run
def test_constrained_samples_keep_pythons_lexical_rules(python_run):
    model = kerasgen.load(str(python_run), jit_compile=False)
    free = model.generate(400, "def ", seed=2, num_samples=16, constrain="none")
    kept = model.generate(400, "def ", seed=2, num_samples=16, constrain="python")
    assert sum(bool(lexical_errors(text)) for text in free) >= 8  # the model does slip
    assert [lexical_errors(text) for text in kept] == [[]] * 16
    assert all(text.startswith("def ") for text in kept)
    assert model.generate(400, "def ", seed=2, num_samples=16, constrain="python") == kept


@pytest.mark.slow  # 16 samples of 300 characters and a compiled scan (about 5 s)
def test_the_constraint_reads_a_long_prime_before_drawing(python_run):
    # The prime opens brackets, then runs on past compiled chunks of 128 characters (read
    # without drawing): the sampler's lexer must have read it all, so that a lexer reading
    # the whole text from its start finds every drawn character allowed.
    model = kerasgen.load(str(python_run), jit_compile=False)
    prime = "x = 1\ny = f(a, [b" + ", b" * 150
    free = model.generate(300, prime, seed=1, num_samples=8, constrain="none")
    # (The compiled lexer alone: under "python" its layout choice yields where the exact
    # reader leaves nothing else, e.g. a line break inside brackets.)
    kept = model.generate(300, prime, seed=1, num_samples=8, constrain="python-tokens")
    assert any(forbidden_positions(text) for text in free)  # the model does slip
    assert [forbidden_positions(text) for text in kept] == [[]] * 8


def test_sample_syntax_python_constrains_its_draws_by_default(python_run):
    args = [
        "sample",
        "--save_dir",
        str(python_run),
        "-n",
        "30",
        "--seed",
        "4",
        "--syntax",
        "python",
        "--prime",
        "def ",
        "--num_samples",
        "2",
        "--tries",
        "2",
    ]
    default, constrained = run(args), run([*args, "--constrain", "python"])
    assert default.exit_code == 0 and "blocks drawn" in default.stderr, default.output
    assert (default.stdout, default.stderr) == (constrained.stdout, constrained.stderr)
    assert kerasgen.load(str(python_run)).default_constrain("python") == "python"
    assert kerasgen.load(str(python_run)).default_constrain(None) == "none"


@pytest.mark.slow  # 200 characters under the exact constraint from the CLI (the server-rows
# test below checks the exact constraint's draws in the default run)
def test_sample_constrain_python_prints_what_pythons_tokenizer_reads(python_run):
    r = run(
        [
            "sample",
            "--save_dir",
            str(python_run),
            "-n",
            "200",
            "--seed",
            "4",
            "--constrain",
            "python",
            "--prime",
            "def ",
        ]
    )
    # The last line is cut off by -n (the CLI ends the output with a line break).
    assert r.exit_code == 0 and lexical_errors(r.stdout[:-1]) == [], r.output


@pytest.mark.slow  # samples under the exact constraint through evaluate (about 6 s)
def test_evaluate_reports_the_constraint(python_run):
    r = run(
        [
            "evaluate",
            "--save_dir",
            str(python_run),
            "--python_syntax",
            "4",
            "-n",
            "200",
            "--constrain",
            "python",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    syntax = json.loads(r.stdout)["python_syntax"]
    assert syntax["constrain"] == "python" and syntax["samples"] == 4
    assert "constrained to python" in _settings(SamplingOptions(constrain="python"))
    assert "constrained" not in _settings(SamplingOptions())


@pytest.mark.slow  # trains a word-level run through the CLI
def test_the_constraint_needs_a_character_level_run(tmp_path, tiny_train):
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("def f(x):\n    return x\n\n\n" * 40, encoding="utf-8")
    save = tmp_path / "save"
    r = run(
        [
            "train",
            "--data_dir",
            str(data),
            "--save_dir",
            str(save),
            "--log_dir",
            str(tmp_path / "logs"),
            "--level",
            "word",
            "--num_epochs",
            "1",
            "--val_frac",
            "0",
            *tiny_train,
        ]
    )
    assert r.exit_code == 0, r.output
    for args in (
        ["sample", "--constrain", "python"],
        ["evaluate", "--python_syntax", "2", "--constrain", "python"],
    ):
        r = run([*args, "--save_dir", str(save)])
        assert r.exit_code == 2, r.output
        assert "python needs a character-level run" in r.output, r.output
    # --syntax python alone still parses and redraws blocks, unconstrained.
    r = run(
        [
            "sample",
            "--syntax",
            "python",
            "-n",
            "5",
            "--seed",
            "1",
            "--tries",
            "1",
            "--save_dir",
            str(save),
        ]
    )
    assert r.exit_code == 0 and "blocks drawn" in r.stderr, r.output
    with pytest.raises(ParameterError, match=r"^constrain python needs a character-level run") as e:
        kerasgen.load(str(save)).generate(10, constrain="python")
    assert e.value.param == "constrain"


def test_the_constraint_needs_a_vocabulary_with_line_breaks():
    with pytest.raises(ParameterError, match=r"^constrain python needs a model that writes line"):
        PythonLexer(Vocabulary.from_text("def f(x): return x"))
    PythonLexer(Vocabulary.from_text("def f(x): return x\n"))


# ---------------------------------------------------------------- the exact constraint


@pytest.mark.slow  # 24 samples of 600 characters (about 14 s); the server-rows
# test below checks the exact constraint's draws in the default run
def test_every_character_drawn_under_the_exact_constraint_keeps_a_module_possible(python_run):
    from kerasgen.python_prefix import refused_at
    from kerasgen.python_syntax import compiles, python_blocks

    model = kerasgen.load(str(python_run), jit_compile=False)
    free = model.generate(600, "def ", seed=3, num_samples=8, constrain="none")
    tokens = model.generate(600, "def ", seed=3, num_samples=8, constrain="python-tokens")
    exact = model.generate(600, "def ", seed=3, num_samples=8, constrain="python")
    assert sum(refused_at(text) is not None for text in free + tokens) >= 8  # it does slip
    assert [refused_at(text) for text in exact] == [None] * 8
    blocks = [b for text in exact for b in python_blocks(text)]
    assert all(compiles(b) for b in blocks)
    # The same seed, the same text.
    assert model.generate(600, "def ", seed=3, num_samples=8, constrain="python") == exact


def test_the_exact_constraint_through_the_server_rows(python_run):
    """Streams that join and leave (the server's engine): each row sent back on its own."""
    from kerasgen.python_prefix import refused_at
    from kerasgen.sampler import CONSTRAINED_CHUNK, Rows

    model = kerasgen.load(str(python_run), jit_compile=False)
    sampler = model.sampler(4)
    rows = Rows(4, lambda size: sampler)
    texts = {0: "", 2: ""}
    rows.join(0, "def ", SamplingOptions(seed=1, constrain="python"))
    rows.join(2, "class ", SamplingOptions(seed=2, constrain="python"), index=1)
    rows.join(3, "", SamplingOptions(seed=3))
    free, calls = "", 0  # the unconstrained row goes on a whole chunk at every call
    while calls < 60 and min(len(t) for t in texts.values()) <= 100:
        taken, calls = rows.run(), calls + 1
        free += model.vocab.decode(taken.new(3))
        for r in texts:
            texts[r] += model.vocab.decode(taken.new(r))
    assert rows.checks.counts["refused"] > 0  # some draws were sent back
    assert refused_at("def " + texts[0]) is None and refused_at("class " + texts[2]) is None
    assert len(texts[0]) > 100 and len(texts[2]) > 100
    assert len(free) == calls * CONSTRAINED_CHUNK  # a row sent back holds back no other
    # Each row's text is its own: what the same request draws alone.
    alone = model.generate(len(texts[0]), "def ", seed=1, constrain="python")
    assert alone == "def " + texts[0]
