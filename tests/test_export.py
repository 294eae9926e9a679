"""``kerasgen export``: a SavedModel that generates in its graph, loadable without kerasgen."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from runner import run

import kerasgen
from kerasgen import rundir
from kerasgen.errors import ParameterError
from kerasgen.model import ModelConfig, build_model
from kerasgen.vocab import Vocabulary, WordVocabulary

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


def tiny_run(folder, vocab, family):
    import keras

    keras.utils.set_random_seed(5)
    config = ModelConfig(
        vocab_size=len(vocab),
        model=family,
        rnn_size=16,
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


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn", "transformer", "bigram"])
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


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn", "transformer", "bigram"])
def test_a_tflite_export_samples_what_the_run_samples(tiny_text, tmp_path, family):
    tiny_run(tmp_path / "run", Vocabulary.from_text(tiny_text), family)
    out = tmp_path / "tflite"
    r = run(["export", "--save_dir", tmp_path / "run", "--out", out, "--format", "tflite"])
    assert r.exit_code == 0, r.output
    assert {"model.tflite", "vocab.json", "export.json"} == set(os.listdir(out))
    greedy = ["-n", "200", "--prime", "KING", "--sample", "0"]
    expected = run(["sample", "--save_dir", tmp_path / "run", *greedy])
    got = run(["sample", "--exported", out, *greedy])
    assert got.exit_code == 0 and got.stdout == expected.stdout
    drawn = ["-n", "80", "--seed", "3", "--temperature", "0.9"]
    once, again = (run(["sample", "--exported", out, *drawn]).stdout for _ in range(2))
    assert once == again and len(once) > 40


def test_a_tflite_export_holds_any_level(tiny_text, tmp_path):
    vocab = WordVocabulary.from_text(tiny_text, 200)
    tiny_run(tmp_path / "run", vocab, "lstm")
    out = tmp_path / "tflite"
    kerasgen.export(str(tmp_path / "run"), str(out), format="tflite")
    greedy = {"sample": 0, "seed": 1}
    text = kerasgen.load(str(tmp_path / "run")).generate(60, "KING", **greedy)
    assert kerasgen.load_exported(str(out)).generate(60, "KING", **greedy) == text
    with pytest.raises(ParameterError, match=r"^top_k is not available"):
        kerasgen.load_exported(str(out)).generate(5, top_k=3)
