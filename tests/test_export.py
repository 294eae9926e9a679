"""``kerasgen export``: a SavedModel that generates in its graph, loadable without kerasgen;
the step as TFLite and ONNX files, run and scored through their runtimes."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runner import run

import kerasgen
from kerasgen import rundir
from kerasgen.errors import ParameterError
from kerasgen.model import ModelConfig, build_model
from kerasgen.vocab import BpeVocabulary, Vocabulary, WordVocabulary

DOCS = Path(__file__).resolve().parent.parent / "docs"

# Loads each exported model in a Python where kerasgen cannot be imported, and
# prints the text of serving_default for the primes given.
LOAD_WITHOUT_KERASGEN = """
import json, sys
sys.modules["kerasgen"] = None  # any import of kerasgen now fails
import tensorflow as tf
out = {}
for folder in sys.argv[1:]:
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    text = serve(prime=tf.constant(["KING", "", "QUEEN:\\n"]), n=tf.constant(150),
                 temperature=tf.constant(0.9), seed=tf.constant(11, tf.int64))["text"]
    out[folder] = [t.decode("utf-8") for t in text.numpy()]
print("RESULT " + json.dumps(out))
"""


def tiny_run(folder, vocab, family, rnn_size=16):
    import keras

    keras.utils.set_random_seed(5)
    config = ModelConfig(
        vocab_size=len(vocab),
        model=family,
        rnn_size=rnn_size,
        num_layers=2,
        n_head=2,
        context=12 if family == "transformer" else 0,
    )
    model = build_model(config, 1)
    model.set_weights(
        [w + 0.3 * np.random.default_rng(6).normal(size=w.shape) for w in model.get_weights()]
    )
    rundir.write_run(str(folder), config, {}, vocab, "\n")
    rundir.save_checkpoint(str(folder), "latest", model)


@pytest.mark.slow  # three runs exported, then a Python of their own (about 20 s); an
# export's samples are checked in the default run by test_an_export_samples_what_the_run_samples
def test_export_generates_what_sample_does_without_kerasgen(tiny_text, tmp_path):
    vocab = Vocabulary.from_text(tiny_text)
    folders = []
    for family in ("lstm", "transformer", "bigram"):
        tiny_run(tmp_path / family, vocab, family)
        out = tmp_path / f"{family}-export"
        r = run(["export", "--save_dir", str(tmp_path / family), "--out", str(out)])
        assert r.exit_code == 0, r.output
        folders.append(str(out))
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_KERASGEN, *folders],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for family, folder in zip(("lstm", "transformer", "bigram"), folders):
        model = kerasgen.load(str(tmp_path / family))
        # Row r of the batch draws as sample r of --num_samples: row 0 is kerasgen sample's.
        assert served[folder][0] == model.generate(150, "KING", temperature=0.9, seed=11)
        rows = [
            model.generate(150, p, temperature=0.9, seed=11, num_samples=3)[r]
            for r, p in enumerate(["KING", "", "QUEEN:\n"])
        ]
        assert served[folder] == rows, family
    # TensorFlow's tool, beside this Python (a virtualenv's bin/ need not be on PATH).
    tool = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    tool = tool if os.path.exists(tool) else shutil.which("saved_model_cli")
    if tool is None:
        pytest.skip("saved_model_cli is not installed")
    cli = subprocess.run(
        [tool, "show", "--all", "--dir", folders[0]], capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    for name in ("prime", "temperature", "seed", "text", "serving_default"):
        assert name in cli.stdout


def test_export_refuses_other_levels_and_existing_folders(tiny_text, tmp_path):
    vocab = WordVocabulary.from_text(tiny_text, 100)
    tiny_run(tmp_path / "word", vocab, "lstm")
    r = run(["export", "--save_dir", str(tmp_path / "word"), "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "word-level" in r.output and not (tmp_path / "e").exists()
    tiny_run(tmp_path / "char", Vocabulary.from_text(tiny_text), "lstm")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    r = run(["export", "--save_dir", str(tmp_path / "char"), "--out", str(tmp_path / "taken")])
    assert r.exit_code == 2 and "already exists" in r.output
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    shutil.rmtree(tmp_path / "taken")


@pytest.mark.parametrize(
    "family",
    ["lstm", "gru", "rnn", pytest.param("transformer", marks=pytest.mark.slow), "bigram"],
)
def test_the_step_signature_steps_as_the_keras_model_does(tiny_text, tmp_path, family):
    import tensorflow as tf

    vocab = Vocabulary.from_text(tiny_text)
    tiny_run(tmp_path / "run", vocab, family)
    kerasgen.export(str(tmp_path / "run"), str(tmp_path / "out"))
    exported = tf.saved_model.load(str(tmp_path / "out"))
    step = exported.signatures["step"]
    state = exported.signatures["initial_state"](batch=tf.constant(2))
    ids = np.random.default_rng(0).integers(0, len(vocab), size=(2, 10)).astype(np.int32)
    logits = []
    for t in range(ids.shape[1]):  # fewer steps than the transformer's context
        out = step(ids=tf.constant(ids[:, t]), **state)
        logits.append(out.pop("logits").numpy())
        state = out
    saved = rundir.read_run(str(tmp_path / "run"))
    net = build_model(saved.model_config, 2)
    rundir.load_checkpoint(str(tmp_path / "run"), "latest", net)
    expected = net(ids, training=False).numpy()  # (2, 10, V), from a zero state
    assert np.abs(np.stack(logits, axis=1) - expected).max() <= 1e-5


# GRU and simple RNN share the LSTM's fused path, and the transformer's export is sampled
# by test_export_generates_what_sample_does_without_kerasgen: in the slow run only.
FAMILIES = ["lstm", "bigram"] + [
    pytest.param(f, marks=pytest.mark.slow) for f in ("transformer", "gru", "rnn")
]


@pytest.mark.parametrize("family", FAMILIES)
def test_an_export_samples_what_the_run_samples(tiny_text, tmp_path, family):
    tiny_run(tmp_path / "run", Vocabulary.from_text(tiny_text), family)
    greedy = ["-n", "200", "--prime", "KING", "--sample", "0"]
    drawn = ["-n", "200", "--seed", "3", "--temperature", "0.9"]
    expected = run(["sample", "--save_dir", tmp_path / "run", *greedy])
    expected_drawn = run(["sample", "--save_dir", tmp_path / "run", *drawn])
    for format, rows in (("tflite", [1]), ("onnx", [None])):
        out = tmp_path / format
        r = run(["export", "--save_dir", tmp_path / "run", "--out", out, "--format", format])
        assert r.exit_code == 0, r.output
        assert {f"model.{format}", "vocab.json", "export.json"} == set(os.listdir(out))
        info = json.loads((out / "export.json").read_text())
        assert {s["shape"][0] for s in info["state"]} == set(rows)  # TFLite: one row
        got = run(["sample", "--exported", out, *greedy])
        assert got.exit_code == 0 and got.stdout == expected.stdout, format
        # A seed draws what the compiled sampler draws: the same uniforms, the same text.
        got = run(["sample", "--exported", out, *drawn])
        assert got.stdout == expected_drawn.stdout != expected.stdout, format


@pytest.mark.slow  # two runs exported and sampled (5 to 6 s each)
@pytest.mark.parametrize("level", ["word", "bpe"])
def test_exports_hold_every_level(tiny_text, tmp_path, level):
    if level == "word":
        vocab = WordVocabulary.from_text(tiny_text, 200)
    else:
        vocab = BpeVocabulary.from_text(tiny_text * 3, 300)
    tiny_run(tmp_path / "run", vocab, "gru" if level == "bpe" else "lstm")
    model = kerasgen.load(str(tmp_path / "run"))
    greedy = {"sample": 0, "seed": 1}
    text = model.generate(60, "KING", **greedy)
    expected = model.evaluate(text=tiny_text)
    for format in ("tflite", "onnx"):
        out = tmp_path / format
        kerasgen.export(str(tmp_path / "run"), str(out), format=format)
        exported = kerasgen.load_exported(str(out))
        assert exported.generate(60, "KING", **greedy) == text, format
        for mode in (1, 2):  # every draw, and draws after a space only
            seeded = {"sample": mode, "seed": 4, "temperature": 0.8}
            drawn = exported.generate(60, "KING", **seeded)
            assert drawn == model.generate(60, "KING", **seeded), (format, mode)
        scored = exported.evaluate(text=tiny_text)
        assert scored["level"] == level and scored["targets"] == expected["targets"]
        for key in ("nats_per_char", "nats_per_token", "cold_nats_per_char"):
            assert abs(scored[key] - expected[key]) <= 1e-5, (format, key)
    with pytest.raises(ParameterError, match=r"^top_k is not available"):
        exported.generate(5, top_k=3)


@pytest.mark.slow  # 5 to 7 s each; the quantized exports' test evaluates an export in
# the default run
@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_evaluate_scores_an_export_as_it_scores_the_run(tiny_text, tmp_path, family):
    # The transformer reads half-overlapping windows of its context: a text longer than
    # several contexts, in few streams, has many.
    tiny_run(tmp_path / "run", Vocabulary.from_text(tiny_text), family)
    (tmp_path / "held.txt").write_text(tiny_text[: len(tiny_text) // 2])
    scored = ["--text", tmp_path / "held.txt", "--streams", "3", "--json"]
    expected = json.loads(run(["evaluate", "--save_dir", tmp_path / "run", *scored]).stdout)
    for format in ("tflite", "onnx"):
        out = tmp_path / format
        kerasgen.export(str(tmp_path / "run"), str(out), format=format)
        r = run(["evaluate", "--exported", out, *scored])
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout)
        assert got["save_dir"] == str(out) and got["targets"] == expected["targets"]
        for key in ("nats_per_char", "cold_nats_per_char", "warm_nats_per_char"):
            assert abs(got[key] - expected[key]) <= 1e-5, (format, key)
        table = run(["evaluate", "--exported", out, "--text", tmp_path / "held.txt"]).stdout
        assert f"{out} ({format} export of {tmp_path / 'run'}, latest checkpoint" in table
    refused = run(["evaluate", "--exported", out, "--python_syntax", "3"])
    assert refused.exit_code == 2
    assert "--python_syntax is not available on an exported model" in refused.output


def tflite_ops(path) -> set[str]:
    """The operators of a .tflite file, as TensorFlow's analyzer names them."""
    import tensorflow as tf

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        tf.lite.experimental.Analyzer.analyze(model_path=str(path))
    return set(re.findall(r"Op#\d+ (\w+)\(", printed.getvalue()))


# ONNX's half in the slow run only (the two formats took 9 s together).
@pytest.mark.parametrize("format", ["tflite", pytest.param("onnx", marks=pytest.mark.slow)])
def test_quantized_exports_are_smaller_and_cost_little(tiny_text, tmp_path, format):
    vocab = Vocabulary.from_text(tiny_text)
    tiny_run(tmp_path / "run", vocab, "lstm", rnn_size=64)
    (tmp_path / "held.txt").write_text(tiny_text)
    full = kerasgen.load(str(tmp_path / "run")).evaluate(text=tiny_text)["nats_per_char"]
    sizes = {}
    for quantize in kerasgen.QUANTIZE:
        out = tmp_path / f"{format}-{quantize}"
        flags = ["--format", format, "--quantize", quantize]
        r = run(["export", "--save_dir", tmp_path / "run", "--out", out, *flags])
        assert r.exit_code == 0, r.output
        sizes[quantize] = os.path.getsize(out / f"model.{format}")
        loss = kerasgen.load_exported(str(out)).evaluate(text=tiny_text)["nats_per_char"]
        assert abs(loss - full) <= (1e-5 if quantize == "none" else 0.05), (format, quantize)
        if format == "tflite":
            ops = tflite_ops(out / "model.tflite")
            # Builtin operators only: no Flex (TensorFlow) or custom operators.
            assert ops and all(re.fullmatch(r"[A-Z][A-Z0-9_]*", op) for op in ops), ops
    assert sizes["float16"] < 0.6 * sizes["none"] and sizes["int8"] < 0.8 * sizes["float16"]
    refused = run(
        ["export", "--save_dir", tmp_path / "run", "--out", tmp_path / "s"] + ["--quantize", "int8"]
    )
    assert refused.exit_code == 2 and "--quantize applies to --format tflite" in refused.output
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # the docs' runner and the kerasgen command, each in its own process
def test_the_docs_runner_generates_without_kerasgen(tiny_text, tmp_path):
    tiny_run(tmp_path / "run", Vocabulary.from_text(tiny_text), "lstm")
    greedy = ["-n", "150", "--prime", "KING", "--sample", "0"]
    expected = run(["sample", "--save_dir", tmp_path / "run", *greedy])
    drawn = ["-n", "150", "--prime", "KING", "--seed", "3", "--temperature", "0.9"]
    expected_drawn = run(["sample", "--save_dir", tmp_path / "run", *drawn])
    # The command as a user runs it: its own process, nothing but the text on the terminal.
    kerasgen_command = os.path.join(os.path.dirname(sys.executable), "kerasgen")
    for format in ("tflite", "onnx"):
        out = str(tmp_path / format)
        kerasgen.export(str(tmp_path / "run"), out, format=format)
        printed = []
        for flags in (["--prime", "KING", "-n", "150", "--greedy"], drawn):
            runner = (
                "import runpy, sys; sys.modules['kerasgen'] = None; "  # no kerasgen import
                f"sys.argv = ['edge_runner.py', {out!r}, *{flags!r}]; "
                f"runpy.run_path({str(DOCS / 'edge_runner.py')!r}, run_name='__main__')"
            )
            proc = subprocess.run(
                [sys.executable, "-c", runner], capture_output=True, text=True, timeout=300
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            printed.append(proc.stdout)
        assert printed == [expected.stdout, expected_drawn.stdout], format
        sampled = subprocess.run(
            [kerasgen_command, "sample", "--exported", out, *drawn],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sampled.returncode == 0 and sampled.stderr == "", sampled.stderr[-2000:]
        assert sampled.stdout == printed[1] != printed[0], format


def test_tensorflows_interpreter_runs_an_export_where_litert_is_missing(
    tiny_text, tmp_path, monkeypatch
):
    tiny_run(tmp_path / "run", Vocabulary.from_text(tiny_text), "gru")
    kerasgen.export(str(tmp_path / "run"), str(tmp_path / "out"), format="tflite")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # its import now fails
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    text = kerasgen.load(str(tmp_path / "run")).generate(80, "QUEEN", sample=0)
    assert kerasgen.load_exported(str(tmp_path / "out")).generate(80, "QUEEN", sample=0) == text


def test_exports_refuse_what_they_cannot_hold_in_one_line(tiny_text, tmp_path, monkeypatch):
    import importlib.util

    tiny_run(tmp_path / "run", Vocabulary.from_text(tiny_text), "lstm")
    kerasgen.export(str(tmp_path / "run"), str(tmp_path / "saved"))
    r = run(["sample", "--exported", tmp_path / "saved"])
    assert r.exit_code == 2 and "holds no export.json" in r.output
    assert len(r.output.strip().splitlines()) == 1
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else found(name, *a)
    )
    r = run(["export", "--save_dir", tmp_path / "run", "--out", tmp_path / "o", "--format", "onnx"])
    assert r.exit_code == 2 and "needs tf2onnx" in r.output and "pip install" in r.output
    assert not (tmp_path / "o").exists()


def _edit_json(path, change):
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


def _shorter_state(info):
    info["state"][0]["shape"][1] += 1
    return info


DAMAGE = {
    "model file removed": lambda d, f: (d / f"model.{f}").unlink(),
    "model file not a model": lambda d, f: (d / f"model.{f}").write_bytes(b"not a model"),
    "export.json a list": lambda d, f: (d / "export.json").write_text("[1, 2]"),
    "export.json cut short": lambda d, f: (d / "export.json").write_text('{"format": "'),
    "state shape edited": lambda d, f: _edit_json(d / "export.json", _shorter_state),
    "model elsewhere": lambda d, f: _edit_json(d / "export.json", lambda i: {**i, "model": "/x"}),
    "vocabulary cut": lambda d, f: _edit_json(
        d / "vocab.json", lambda v: {**v, "chars": v["chars"][:5], "counts": v["counts"][:5]}
    ),
    "vocab.json removed": lambda d, f: (d / "vocab.json").unlink(),
}


def test_a_damaged_export_is_one_error_line(tiny_text, tmp_path):
    tiny_run(tmp_path / "run", Vocabulary.from_text(tiny_text), "lstm")
    for format in ("tflite", "onnx"):
        kerasgen.export(str(tmp_path / "run"), str(tmp_path / format), format=format)
        for name, damage in DAMAGE.items():
            folder = tmp_path / f"{format}-{name.replace(' ', '-')}"
            shutil.copytree(tmp_path / format, folder)
            damage(folder, format)
            for command in (["sample", "-n", "5"], ["evaluate", "--text", folder / "vocab.json"]):
                r = run([command[0], "--exported", folder, *command[1:]])
                assert r.exit_code == 1, (format, name, r.output)
                assert len(r.output.strip().splitlines()) == 1, (format, name, r.output)
                assert "is not a readable export" in r.output and "export again" in r.output
