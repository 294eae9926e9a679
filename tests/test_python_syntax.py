"""The Python syntax measure's interval and counts, and sampling code that parses."""

import ast
import json
import string
from types import SimpleNamespace

import pytest
from runner import run

import kerasgen
from kerasgen import python_syntax
from kerasgen.python_syntax import (
    BlockSampler,
    first_block,
    measure_syntax,
    python_blocks,
    syntax_rate,
    wilson_interval,
)
from kerasgen.sampling import SamplingOptions
from kerasgen.vocab import Vocabulary

# Simple Python a tiny model learns in seconds: short blocks, two blank lines between.
PY_TEXT = (
    "import os\n\n\n"
    "def add(a, b):\n    return a + b\n\n\n"
    "def sub(a, b):\n    return a - b\n\n\n"
    "x = add(1, 2)\n\n\n"
) * 40


# ---------------------------------------------------------------- the measure


@pytest.mark.parametrize(
    "ok, total, lo, hi",
    [
        # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (Wilson score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(ok, total, lo, hi):
    got = wilson_interval(ok, total)
    assert got == pytest.approx((lo, hi), abs=5e-5)
    assert wilson_interval(0, 0) is None


def test_samples_that_never_return_to_column_0_count_nothing():
    texts = [
        "x = 1\ny = 2\n",  # one counted block
        "    deep\n    deeper\n",  # never at column 0
        "def f():\n    return 1\n",  # the function never ended
        "x = 1\ny = )\nz = 2\nw = 1\n",
    ]  # three counted, the middle one fails
    result = measure_syntax(texts, chars=100)
    assert (result.ok, result.total, result.blockless) == (3, 4, 2)
    assert result.never_at_column_0 == 0.5
    as_json = result.to_dict(SamplingOptions(top_p=0.9, seed=3))
    assert as_json["never_at_column_0"] == 0.5 and as_json["rate"] == 0.75
    assert as_json["interval"] == pytest.approx(list(wilson_interval(3, 4)))
    assert "prime" not in as_json
    assert (as_json["temperature"], as_json["top_k"], as_json["top_p"], as_json["seed"]) == (
        1.0,
        0,
        0.9,
        3,
    )


def test_a_prime_counts_functions_finished_and_parsing():
    texts = [
        "def f():\n    return 1\nx = 1\n",  # finished, parses
        "def g(:\n    pass\ny = 2\n",  # finished, fails
        "def h():\n    return (\n",
    ]  # unfinished
    result = measure_syntax(texts, chars=50, prime="def ")
    assert (result.finished, result.finished_ok) == (2, 1)
    assert result.to_dict(SamplingOptions())["prime"] == {
        "text": "def ",
        "finished": 2,
        "ok": 1,
        "rate": 0.5,
        "interval": list(wilson_interval(1, 2)),
    }


def test_a_block_ends_at_the_next_complete_line_that_starts_one():
    assert first_block("def f():\n    return 1\nx = 1\ny", 4) == "def f():\n    return 1\n"
    assert first_block("def f():\n    return 1\nel", 4) is None  # "else" or not: undecided
    assert first_block("import os\nimport sys\nx = 1\n", 12) == "import os\nimport sys\n"
    assert first_block("# note\nx = 1\ny = 2\n") == "# note\nx = 1\n"
    assert first_block("    indented\nx = 1\ny = 2\n") == "    indented\nx = 1\n"
    assert python_blocks("x = 1\ny = 2\nif z:\n    pass\nelse:\n    pass\nw") == [
        "x = 1\n",
        "y = 2\n",
    ]


# ---------------------------------------------------------------- BlockSampler, scripted


class ScriptedModel:
    """What BlockSampler uses of a TrainedModel; each draw returns the next scripted text."""

    def __init__(self, draws, preamble="\n"):
        self.vocab = Vocabulary.from_text(string.printable)
        self.run = SimpleNamespace(preamble=preamble)
        self.draws, self.calls = list(draws), []

    def check_prime(self, prime):
        if self.vocab.unknown(prime):
            raise ValueError("--prime has characters not in the model's vocabulary")

    def sampler(self, num_samples):
        assert num_samples == 1
        return self

    def stream_ids(self, n, prime, options):
        self.calls.append((prime, options.seed))
        text = self.draws.pop(0)[:n]
        for i in range(0, len(text), 5):  # in pieces, as the real sampler streams
            yield self.vocab.encode(text[i : i + 5])[None, :]


def test_block_sampler_redraws_a_failing_block_and_continues_from_what_it_kept():
    model = ScriptedModel(
        [
            "f(:\n    pass\nx = 1\n",  # the prime's block fails
            "g():\n    return 1\nx = 2\ny",  # parses; "x = 2\ny" carries on
            " = 3\n",
        ]
    )  # completes "x = 2\n"
    blocks = BlockSampler(model)
    out = list(blocks.stream(20, "def ", SamplingOptions(seed=5)))
    assert out == ["def g():\n    return 1\n", "x = 2\n"]
    assert ast.parse("".join(out))
    assert (blocks.stats.drawn, blocks.stats.kept, blocks.stats.gave_up) == (3, 2, 0)
    assert blocks.stats.redraw_rate == pytest.approx(1 / 3)
    primes = [prime for prime, _ in model.calls]
    # A redraw starts again from the prime; a later block from the text kept so far.
    assert primes == ["def ", "def ", "def g():\n    return 1\nx = 2\ny"]
    seeds = [seed for _, seed in model.calls]
    assert len(set(seeds)) == 3
    again = ScriptedModel(["f(:\n    pass\nx = 1\n", "g():\n    return 1\nx = 2\ny", " = 3\n"])
    list(BlockSampler(again).stream(20, "def ", SamplingOptions(seed=5)))
    assert [seed for _, seed in again.calls] == seeds  # the same seed draws the same


def test_block_sampler_gives_up_after_its_tries_and_counts_unfinished_draws():
    model = ScriptedModel(["    x = 1\n" * 300, "f(:\n    pass\nx = 1\n", "f(:\n    pass\nx = 1\n"])
    blocks = BlockSampler(model, tries=3)
    assert list(blocks.stream(100, "def ", SamplingOptions(seed=1))) == []
    stats = blocks.stats
    assert (stats.drawn, stats.kept, stats.unfinished, stats.gave_up) == (3, 0, 1, 1)
    # Argmax would draw the same block again: one try only.
    model = ScriptedModel(["f(:\n    pass\nx = 1\n"])
    blocks = BlockSampler(model, tries=3)
    assert list(blocks.stream(100, "def ", SamplingOptions(sample=0))) == []
    assert blocks.stats.drawn == 1 and blocks.stats.gave_up == 1


def test_block_sampler_reads_at_most_about_context_chars_back(monkeypatch):
    monkeypatch.setattr(python_syntax, "CONTEXT_CHARS", 12)
    model = ScriptedModel(["a = 1\nb = 2\n", "c = 3\n", "d = 4\n", "e = 5\n"])
    out = list(BlockSampler(model).stream(24, "", SamplingOptions(seed=1)))
    assert out == ["a = 1\n", "b = 2\n", "c = 3\n", "d = 4\n"]
    # Each draw reads whole kept blocks, the oldest dropped once past 12 characters,
    # then the carried start of the next block (a block ends once the line after it
    # is complete, so the carry is that line).
    assert [prime for prime, _ in model.calls] == [
        "",
        "a = 1\nb = 2\n",
        "a = 1\nb = 2\nc = 3\n",
        "b = 2\nc = 3\nd = 4\n",
    ]


def test_block_sampler_drops_what_a_fresh_draw_makes_before_its_block():
    model = ScriptedModel(
        [
            "a = 1\nb = (\n",  # "b = (" never closes in the next draw
            " 1,\n    2\n",
            "    junk\nc = 3\nd = 4\n",
        ]
    )  # an indented line, then a block
    blocks = BlockSampler(model)
    assert list(blocks.stream(12, "", SamplingOptions(seed=2))) == ["a = 1\n", "c = 3\n"]
    assert (blocks.stats.drawn, blocks.stats.kept, blocks.stats.unfinished) == (3, 2, 1)


def test_block_sampler_refuses_an_indented_prime():
    with pytest.raises(ValueError, match="column 0"):
        BlockSampler(ScriptedModel([])).stream(10, "    return")


# ---------------------------------------------------------------- through a real model


@pytest.fixture(scope="module")
def python_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("python")
    (base / "data").mkdir()
    (base / "data" / "input.txt").write_text(PY_TEXT, encoding="utf-8")
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
            "48",
            "--num_layers",
            "1",
            "--batch_size",
            "4",
            "--seq_length",
            "32",
            "--num_epochs",
            "6",
            "--learning_rate",
            "0.01",
            "--seed",
            "1",
            "--no_jit_compile",
        ]
    )
    assert r.exit_code == 0, r.output
    return save


@pytest.fixture(scope="module")
def python_model(python_run):
    """The run loaded once: its compiled samplers serve every test that asks for it."""
    return kerasgen.load(str(python_run))


@pytest.mark.parametrize(
    "prime",
    [  # slow (7 to 15 s each): --syntax python from the CLI is in the default run through
        # test_python_lexer's default-constraint test and the test below, the server's too
        pytest.param(p, marks=pytest.mark.slow)
        for p in ("", "def ", "import ")
    ],
)
def test_sample_syntax_python_prints_only_blocks_that_parse(python_run, python_model, prime):
    args = [
        "sample",
        "--save_dir",
        str(python_run),
        "-n",
        "200",
        "--seed",
        "3",
        "--syntax",
        "python",
        "--prime",
        prime,
    ]
    r = run(args)
    assert r.exit_code == 0, r.output
    text = r.stdout
    assert text.startswith(prime) and text.endswith("\n")
    assert ast.parse(text)
    assert all(ast.parse(block) for block in python_blocks(text))
    assert len(text) >= len(prime) + 200  # whole blocks until -n characters follow the prime
    counts = [line for line in r.stderr.splitlines() if line.startswith("python syntax: kept")]
    assert len(counts) == 1, r.stderr
    model = python_model  # the same seed, the same text
    assert model.generate(200, prime, seed=3, syntax="python") == text
    assert "".join(model.stream(200, prime, seed=3, syntax="python")) == text


def test_sample_syntax_python_ends_a_sample_that_runs_out_of_tries(python_run):
    r = run(
        [
            "sample",
            "--save_dir",
            str(python_run),
            "-n",
            "200",
            "--seed",
            "3",
            "--syntax",
            "python",
            "--prime",
            "def (",
            "--tries",
            "2",
        ]
    )
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    assert (
        "sample 1: no draw of the next block compiled in 2 tries; the sample ends there" in r.stderr
    )
    assert "kept 0 of 2 blocks drawn" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "--syntax", "python", "--prime", "  x"], "column 0"),
        (
            ["sample", "--syntax", "python", "--stop", "x"],
            "--stop does not combine with --syntax python",
        ),
        (["evaluate", "--prime", "def "], "--python_syntax"),
        (["evaluate", "--python_syntax", "2", "--prime", "\tdef "], "column 0"),
    ],
)
def test_syntax_usage_errors(python_run, args, message):
    r = run([*args, "--save_dir", str(python_run)])
    assert r.exit_code == 2 and message in r.output, r.output


def test_evaluate_reports_the_interval_and_the_prime_measure(python_run):
    r = run(
        [
            "evaluate",
            "--save_dir",
            str(python_run),
            "--python_syntax",
            "6",
            "-n",
            "300",
            "--prime",
            "def ",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    syntax = json.loads(r.stdout)["python_syntax"]
    assert 0 <= syntax["never_at_column_0"] <= 1 and syntax["samples"] == 6
    assert syntax["interval"] == pytest.approx(list(wilson_interval(syntax["ok"], syntax["total"])))
    primed = syntax["prime"]
    assert primed["text"] == "def " and 0 <= primed["ok"] <= primed["finished"] <= 6
    table = run(
        [
            "evaluate",
            "--save_dir",
            str(python_run),
            "--python_syntax",
            "6",
            "-n",
            "300",
            "--prime",
            "def ",
        ]
    )
    assert "95% CI" in table.stdout and "first blocks finished" in table.stdout


def test_evaluate_samples_with_top_k_and_top_p(python_run):
    # top_k 1 is greedy: every seed gives the same samples, so the same counts.
    results = []
    for seed in ("1", "2"):
        r = run(
            [
                "evaluate",
                "--save_dir",
                str(python_run),
                "--python_syntax",
                "3",
                "-n",
                "200",
                "--top_k",
                "1",
                "--seed",
                seed,
                "--json",
            ]
        )
        assert r.exit_code == 0, r.output
        results.append(json.loads(r.stdout)["python_syntax"])
    assert results[0]["top_k"] == 1 and results[0]["top_p"] == 1.0
    assert {k: v for k, v in results[0].items() if k != "seed"} == {
        k: v for k, v in results[1].items() if k != "seed"
    }
    table = run(
        [
            "evaluate",
            "--save_dir",
            str(python_run),
            "--python_syntax",
            "2",
            "-n",
            "100",
            "--top_p",
            "0.9",
            "--temperature",
            "0.8",
        ]
    )
    assert "temperature 0.8, top_p 0.9)" in table.stdout, table.output


def test_the_measure_counts_what_compiles_not_only_what_parses():
    # Each parses; the compiler refuses the second and third (return outside a function,
    # a parameter named twice), so the measure and --syntax python do too.
    text = "x = 1\nreturn 2\ndef f(a, a):\n    pass\nwhile x:\n    break\ny = 3\n"
    assert syntax_rate([text]) == (2, 4)
    assert all(ast.parse(b) for b in python_blocks(text))
