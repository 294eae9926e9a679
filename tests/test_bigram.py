"""The bigram baseline: a (V, V) table of next-character logits."""

import numpy as np
from runner import run
from tiny import TINY_TEXT

from kerasgen import data
from kerasgen.model import ModelConfig, build_model, rnn_layers
from kerasgen.reference import generate_reference
from kerasgen.sampler import Sampler
from kerasgen.sampling import SamplingOptions
from kerasgen.vocab import Vocabulary


def test_bigram_fits_the_exact_count_based_estimate():
    import keras

    from kerasgen.steps import compile_steps

    vocab = Vocabulary.from_text(TINY_TEXT)
    ids = vocab.encode(TINY_TEXT)
    x, y = data.stream_batches(ids, 4, 16)
    # The exact maximum-likelihood bigram: counts of (current, next) over these pairs.
    counts = np.zeros((len(vocab), len(vocab)))
    np.add.at(counts, (x.ravel(), y.ravel()), 1)
    probs = counts / counts.sum(axis=1, keepdims=True)
    exact = -np.mean(np.log(probs[x.ravel(), y.ravel()]))

    model = build_model(ModelConfig(vocab_size=len(vocab), model="bigram"), 4)
    assert not rnn_layers(model) and model.count_params() == len(vocab) ** 2
    optimizer = keras.optimizers.Adam(learning_rate=0.1)
    train_step, eval_step = compile_steps(model, optimizer, fused=False)
    for _ in range(60):
        for xb, yb in data.make_dataset(x, y):
            train_step(xb, yb)
    fitted = np.mean([float(eval_step(xb, yb)) for xb, yb in data.make_dataset(x, y)])
    assert abs(fitted - exact) < 0.02, (fitted, exact)


def test_bigram_samples_like_the_reference():
    vocab = Vocabulary.from_text("abcab \n")
    model = build_model(ModelConfig(vocab_size=len(vocab), model="bigram"), 2)
    model.set_weights([np.random.default_rng(0).normal(0, 2, (len(vocab), len(vocab)))])
    options = SamplingOptions(seed=4)
    np.testing.assert_array_equal(
        Sampler(model, vocab).generate_ids(140, "ab", options),
        generate_reference(model, vocab, 140, "ab", options),
    )


def test_bigram_from_the_cli(data_dir, tmp_path):
    save = tmp_path / "save"
    r = run(
        [
            "train",
            "--model",
            "bigram",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(save),
            "--log_dir",
            str(tmp_path / "logs"),
            "--batch_size",
            "4",
            "--seq_length",
            "16",
            "--num_epochs",
            "2",
            "--learning_rate",
            "0.05",
        ]
    )
    assert r.exit_code == 0, r.output
    r = run(["sample", "--save_dir", str(save), "-n", "40", "--seed", "1"])
    assert r.exit_code == 0 and len(r.output) >= 40
    r = run(["evaluate", "--save_dir", str(save), "--json"])
    assert r.exit_code == 0, r.output


def test_compare_scores_runs_on_the_same_characters(data_dir, tmp_path):
    import json

    from tiny import TINY_TRAIN

    runs = []
    for family in ("bigram", "lstm"):
        save = tmp_path / family
        r = run(
            [
                "train",
                "--model",
                family,
                "--data_dir",
                str(data_dir),
                "--save_dir",
                str(save),
                "--log_dir",
                str(tmp_path / "logs"),
                "--num_epochs",
                "2",
                *TINY_TRAIN,
            ]
        )
        assert r.exit_code == 0, r.output
        runs.append(str(save))
    r = run(["compare", *runs, "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["model"] for row in rows] == ["bigram", "lstm 2x16"]
    assert rows[0]["loss"]["targets"] == rows[1]["loss"]["targets"] > 0
    for row in rows:
        assert row["params"] > 0 and row["train_seconds"] > 0 and row["chars_per_s"] > 0
        assert np.isfinite(row["loss"]["nats_per_char"])
    table = run(["compare", *runs]).output
    assert "bigram" in table and "lstm 2x16" in table and "nats/char" in table
