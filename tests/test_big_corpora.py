"""Validation as training goes (--eval_every, --eval_chars) and what big corpora need of the loop.

The data layer's own tests (streamed preprocessing, memory-mapped ids) are in test_corpus_data.
"""

import os

import numpy as np
from runner import run

from kerasgen import rundir


def event_steps(log_dir, tag):
    import tensorflow as tf

    steps = []
    for folder in os.listdir(log_dir):
        for name in os.listdir(os.path.join(log_dir, folder)):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, folder, name)):
                steps += [event.step for value in event.summary.value if value.tag == tag]
    return sorted(steps)


def test_eval_every_validates_within_epochs_and_keeps_the_best(data_dir, tmp_path, tiny_train):
    save, logs = tmp_path / "save", tmp_path / "logs"
    r = run(
        [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(save),
            "--log_dir",
            str(logs),
            *tiny_train,
            "--num_epochs",
            "2",
            "--eval_every",
            "7",
            "--eval_chars",
            "70",
        ]
    )
    assert r.exit_code == 0, r.output
    # Curves by step: every 7 steps, and at both epoch ends.
    assert event_steps(logs, "loss/val") == [7, 14, 20, 21, 28, 35, 40]
    assert "step 7/40  val_loss" in r.output
    best = rundir.read_checkpoint_state(str(save), "best")
    assert best["step"] in (7, 14, 20, 21, 28, 35, 40) and best["val_loss"] == best["best_val_loss"]
    r = run(
        [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "x"),
            *tiny_train,
            "--eval_chars",
            "10",
        ],
    )
    assert r.exit_code == 2 and "--eval_chars" in r.output  # less than one batch


def test_validation_mid_epoch_leaves_the_training_streams_state(tiny_text):
    import keras

    from kerasgen import data
    from kerasgen.model import ModelConfig, build_model, rnn_layers
    from kerasgen.steps import SingleDeviceSteps
    from kerasgen.vocab import Vocabulary

    vocab = Vocabulary.from_text(tiny_text)
    model = build_model(ModelConfig(vocab_size=len(vocab), rnn_size=8), 4)
    steps = SingleDeviceSteps(model, keras.optimizers.Adam(), fused=True, jit_compile=False)
    batches = data.StreamBatches(vocab.encode(tiny_text), 4, 16)
    x, y = batches.batch(0)
    steps.train(x, y)
    before = [v.numpy().copy() for layer in rnn_layers(model) for v in layer.states]
    assert any(np.abs(b).sum() > 0 for b in before)
    steps.evaluate_batches(batches.dataset())
    after = [v.numpy() for layer in rnn_layers(model) for v in layer.states]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
