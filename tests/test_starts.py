"""How samples start, and sampling as users expect it: streaming, stop texts, long primes.

Tiny sizes throughout (width 8-16, 2 layers).
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from runner import run

import kerasgen
from kerasgen import rundir
from kerasgen.evaluate import logits_after, start_penalty
from kerasgen.model import ModelConfig, build_model
from kerasgen.reference import generate_reference
from kerasgen.sampler import CHUNK, Sampler
from kerasgen.sampling import SamplingOptions, select_next
from kerasgen.steps import start_rows
from kerasgen.streams import StopTexts, prefix_ids
from kerasgen.vocab import Vocabulary

FAMILIES = ["bigram", "rnn", "gru", "lstm", "transformer"]


def tiny_run(tmp_path, vocab, family, preamble="\n"):
    """A run folder holding a random tiny model of ``family``, loaded."""
    import keras

    keras.utils.set_random_seed(3)
    config = ModelConfig(
        vocab_size=len(vocab),
        model=family,
        rnn_size=16,
        num_layers=2,
        n_head=2,
        context=8 if family == "transformer" else 0,
    )
    model = build_model(config, 1)
    model.set_weights(
        [w + 0.3 * np.random.default_rng(4).normal(size=w.shape) for w in model.get_weights()]
    )  # peaked predictions
    rundir.write_run(str(tmp_path), config, {}, vocab, preamble)
    rundir.save_checkpoint(str(tmp_path), "latest", model)
    return kerasgen.load(str(tmp_path))


@pytest.mark.parametrize(
    "family",
    [  # GRU and simple RNN share the LSTM's fused path: in the slow run only
        pytest.param(f, marks=pytest.mark.slow) if f in ("gru", "rnn") else f for f in FAMILIES
    ],
)
def test_sampler_reads_preamble_and_a_long_prime_as_the_reference(family, tiny_text, tmp_path):
    vocab = Vocabulary.from_text(tiny_text)
    model = tiny_run(tmp_path, vocab, family).build(2)
    prime = tiny_text[: CHUNK * 2 + 37]  # read over three compiled chunks
    options = SamplingOptions(seed=7)
    expected = generate_reference(model, vocab, 20, prime, options, preamble="\n")
    for jit in (True, False):
        sampler = Sampler(model, vocab, "\n", jit_compile=jit)
        np.testing.assert_array_equal(sampler.generate_ids(20, prime, options), expected)


@pytest.mark.parametrize("family", ["lstm", "transformer", "bigram"])
def test_evaluate_scores_starts_from_the_state_sample_starts_in(family, tiny_text, tmp_path):
    # The greedy sample is the argmax of each next-token distribution, so the
    # distributions evaluate computes for a cold start must pick it at every step.
    model = tiny_run(tmp_path, Vocabulary.from_text(tiny_text), family)
    text = model.generate(12, "", sample=0)
    ids = model.vocab.encode(text)
    logits, _, _ = logits_after(model, [prefix_ids(model.vocab, "\n", "")], [ids])
    np.testing.assert_array_equal(logits[0].argmax(-1), ids)


def test_start_penalty_scores_line_starts_cold_and_warm(tiny_text, tmp_path):
    model = tiny_run(tmp_path, Vocabulary.from_text(tiny_text), "lstm")
    penalty = start_penalty(model, tiny_text, count=5, chars=6, before=40)
    assert penalty.lines == 5 and penalty.chars >= 6
    assert penalty.warm_nats_per_char > 0 and penalty.cold_nats_per_char > 0
    assert penalty.ratio == pytest.approx(penalty.cold_nats_per_char / penalty.warm_nats_per_char)
    assert start_penalty(model, "no line breaks at all") is None


def test_training_starts_streams_at_a_line_start_from_a_zero_state():
    import tensorflow as tf

    states = [[tf.ones((3, 2)), 2 * tf.ones((3, 2))]]
    x = tf.constant([[4, 1], [0, 4], [4, 4]])  # row 1 begins with the newline (id 0)
    out = start_rows(states, x, line_start_id=0)
    np.testing.assert_array_equal(out[0][0].numpy(), [[1, 1], [0, 0], [1, 1]])
    np.testing.assert_array_equal(out[0][1].numpy(), [[2, 2], [0, 0], [2, 2]])
    assert start_rows(states, x, None) is states


def test_tiny_temperature_is_argmax():
    import tensorflow as tf

    logits = tf.constant([[0.1, 3.0, 2.9, -1.0], [5.0, 4.99, 0.0, 0.0]])
    for seed in range(10):
        drawn = select_next(logits, tf.constant([0, 0]), seed, 1, 1e-30, SamplingOptions(), 0)
        np.testing.assert_array_equal(drawn.numpy(), [1, 0])


def test_stop_texts_cut_across_pieces():
    cut = StopTexts(["\n\n", "END"], 3)
    assert cut.feed(["ab\n", "xEN", "no stop"]) == ["ab", "x", "no stop"]
    assert cut.feed(["\ncd", "Dyy", "\n"]) == ["", "", ""]  # rows 0 and 1 stop here
    assert cut.stopped == [True, True, False] and not cut.all_stopped
    assert cut.feed(["more", "more", "\nfin"]) == ["", "", ""]
    assert cut.all_stopped and cut.flush() == ["", "", ""]
    open_end = StopTexts(["\n\n"], 1)
    assert open_end.feed(["tail\n"]) == ["tail"] and open_end.flush() == ["\n"]
    with pytest.raises(ValueError, match="empty"):
        StopTexts([""], 1)


def test_stream_joins_to_generate(trained_run):
    _, save = trained_run
    model = kerasgen.load(str(save))
    pieces = list(model.stream(300, "KING", seed=4))
    assert pieces[0] == "KING" and len(pieces) > 2  # the prime, then chunk by chunk
    assert "".join(pieces) == model.generate(300, "KING", seed=4)
    rows = list(model.stream(150, "KING", seed=4, num_samples=3))
    texts = model.generate(150, "KING", seed=4, num_samples=3)
    assert ["".join(parts) for parts in zip(*rows)] == texts and len(set(texts)) == 3


def test_sample_stop_ends_each_sample_at_its_first_stop_text(trained_run):
    _, save = trained_run
    r = run(
        [
            "sample",
            "--save_dir",
            str(save),
            "--prime",
            "KING",
            "--stop",
            r"\n\n",
            "-n",
            "400",
            "--num_samples",
            "4",
            "--seed",
            "2",
        ]
    )
    assert r.exit_code == 0, r.output
    samples = r.stdout[:-1].split("\n\n----\n\n")
    assert len(samples) == 4
    full = kerasgen.load(str(save)).generate(400, "KING", seed=2, num_samples=4)
    for cut, whole in zip(samples, full):
        assert "\n\n" not in cut and whole.startswith(cut)
        assert whole[len(cut) : len(cut) + 2] == "\n\n" or cut == whole
    assert any(len(cut) < len(whole) for cut, whole in zip(samples, full))
    r = run(["sample", "--save_dir", str(save), "--stop", ""])
    assert r.exit_code == 2 and "--stop" in r.output


@pytest.mark.slow  # a sampling process of its own, starting TensorFlow
def test_sample_streams_and_ctrl_c_keeps_what_was_printed(trained_run, tmp_path):
    _, save = trained_run
    out_file = tmp_path / "out.txt"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kerasgen",
            "sample",
            "--save_dir",
            str(save),
            "-n",
            "10000000",
            "--seed",
            "1",
            "--prime",
            "KING",
            "-o",
            str(out_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        printed = b""
        while len(printed) < 3000:  # text arrives long before ten million characters
            block = os.read(proc.stdout.fileno(), 4096)
            assert block, proc.stderr.read().decode()[-2000:]
            printed += block
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"Traceback" not in err
    text = (printed + rest).decode("utf-8")
    assert text.startswith("KING") and len(text) >= 3000
    kept = out_file.read_text(encoding="utf-8")  # at most the piece being written behind
    assert len(kept) > 3000 - CHUNK and text.startswith(kept)


def test_a_run_from_before_preambles_still_samples_and_evaluates(old_run, tmp_path):
    assert json.loads((old_run / "config.json").read_text()).get("sampling") is None
    r = run(["sample", "--save_dir", str(old_run), "-n", "40", "--prime", "KING", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("KING") and len(r.stdout) == 4 + 40 + 1
    model = kerasgen.load(str(old_run))
    assert model.run.preamble == "" and model.generate(40, "KING", seed=1) == r.stdout[:-1]
    text = tmp_path / "held.txt"
    text.write_text("KING RICHARD:\nNow is the winter of our discontent\n", encoding="utf-8")
    r = run(["evaluate", "--save_dir", str(old_run), "--text", str(text), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["targets"] == len(text.read_text()) - 1


def test_trained_runs_start_at_a_line_start(trained_run):
    _, save = trained_run
    assert json.loads((save / "config.json").read_text())["sampling"] == {"preamble": "\n"}
    assert kerasgen.load(str(save)).run.preamble == "\n"
