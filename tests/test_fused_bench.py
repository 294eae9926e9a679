"""The fast paths against the plain Keras layers, and ``kerasgen bench``."""

import json

import numpy as np
import pytest
from runner import run

import kerasgen
from kerasgen import backward, rundir
from kerasgen.fused import FusedModel
from kerasgen.model import ModelConfig, build_model, reset_states
from kerasgen.vocab import Vocabulary

N, T, H, V = 3, 7, 6, 11  # streams, timesteps, units, vocabulary


def model_with_random_weights(family, num_layers, batch=N, **kw):
    config = ModelConfig(vocab_size=V, model=family, rnn_size=H, num_layers=num_layers, **kw)
    model = build_model(config, batch)
    rng = np.random.default_rng(1)  # non-zero biases too, unlike Keras's initialisers
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model, config


def ids(seed=0, shape=(N, T)):
    return np.random.default_rng(seed).integers(0, V, shape).astype(np.int32)


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_fused_logits_equal_keras_layers_and_carry_the_same_state(family, num_layers):
    import tensorflow as tf

    model, _ = model_with_random_weights(family, num_layers)
    fused = FusedModel(model)
    reset_states(model)
    expected = [model(ids(s)).numpy() for s in range(2)]  # the 2nd call continues the state
    reset_states(model)
    got = [fused(tf.constant(ids(0))).numpy(), tf.function(fused)(tf.constant(ids(1))).numpy()]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5)


def test_fused_model_reads_checkpointed_weights(tmp_path):
    import tensorflow as tf

    model, config = model_with_random_weights("lstm", 2)
    rundir.write_run(str(tmp_path), config, {}, Vocabulary.from_text("abcdefghijk"))
    rundir.save_checkpoint(str(tmp_path), "latest", model)
    loaded = build_model(config, N)
    rundir.load_checkpoint(str(tmp_path), "latest", loaded)
    reset_states(model)
    np.testing.assert_allclose(
        FusedModel(loaded)(tf.constant(ids())).numpy(), model(ids()).numpy(), atol=1e-5
    )


def training_run(fused, jit, steps=4, precision="float32", **model_kw):
    """Losses and final weights of a few Adam steps from fixed weights on fixed batches."""
    import keras

    from kerasgen.steps import compile_steps

    model, _ = model_with_random_weights("lstm", 2, **model_kw)
    optimizer = keras.optimizers.Adam(learning_rate=0.01, global_clipnorm=1.0)
    optimizer.build(model.trainable_variables)
    train_step, eval_step = compile_steps(
        model, optimizer, fused=fused, jit_compile=jit, precision=precision
    )
    # The same batch each step, so the loss must fall; the state still carries on.
    losses = [float(train_step(ids(0), ids(1))) for _ in range(steps)]
    reset_states(model)
    losses.append(float(eval_step(ids(99), ids(98))))
    return np.array(losses), model.get_weights()


@pytest.mark.parametrize("fused, jit", [(True, False), (False, True), (True, True)])
def test_training_steps_match_the_plain_keras_step(fused, jit):
    # The same losses step after step and the same weights at the end mean the
    # same gradients (Adam applied them); state carries between the steps.
    losses, weights = training_run(fused, jit)
    ref_losses, ref_weights = training_run(False, False)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for w, r in zip(weights, ref_weights):
        np.testing.assert_allclose(w, r, atol=1e-5)
    assert losses[-2] < losses[0]


def test_fused_training_with_dropout_learns_and_evaluates_like_keras():
    import tensorflow as tf

    losses, _ = training_run(True, False, steps=8, input_keep_prob=0.8, output_keep_prob=0.8)
    assert np.all(np.isfinite(losses)) and losses[-2] < losses[0]
    model, _ = model_with_random_weights("lstm", 2, input_keep_prob=0.5, output_keep_prob=0.5)
    reset_states(model)
    expected = model(ids(), training=False).numpy()
    reset_states(model)
    np.testing.assert_allclose(FusedModel(model)(tf.constant(ids())).numpy(), expected, atol=1e-5)
    reset_states(model)
    dropped = FusedModel(model)(tf.constant(ids()), training=True).numpy()
    assert not np.allclose(dropped, expected, atol=1e-3)


def test_dropout_masks_are_drawn_per_timestep_at_the_rate():
    import tensorflow as tf

    from kerasgen.fused import _keep_masks

    masks = np.stack([m.numpy() for m in _keep_masks(0.25, 50, tf.constant(40), 30, tf.float32)])
    assert masks.shape == (50, 40, 30)
    assert set(np.unique(masks)) == {0.0, np.float32(1 / 0.75)}  # inverted dropout, as Keras
    assert abs((masks == 0).mean() - 0.25) < 0.02
    assert not np.array_equal(masks[0], masks[1])  # a new mask each timestep
    assert _keep_masks(0.0, 50, 40, 30, tf.float32) is None


def test_bench_json_has_positive_figures():
    r = run(
        [
            "bench",
            "--json",
            "--seconds",
            "2",
            "--rnn_size",
            "16",
            "--batch_size",
            "4",
            "--seq_length",
            "8",
            "--sample_streams",
            "4",
            "--output_keep_prob",
            "0.9",
        ]
    )
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["config"]["output_keep_prob"] == 0.9  # measured with dropout, as trained
    for key in (
        "train_chars_per_s",
        "sample_chars_per_s",
        "sample_batched_chars_per_s",
        "prime_chars_per_s",
        "peak_rss_mb",
        "gflops",
        "gemm_peak_gflops",
        "gemm_peak_bf16_gflops",
    ):
        assert result[key] > 0, key
    # The default precision, auto, as this CPU resolves it.
    assert result["precision"] == backward.resolve_precision("auto", True)
    assert 0 < result["peak_share"] < 1
    assert "profile_ms" not in result  # only with --profile


def test_bench_profile_times_the_parts_of_a_training_step():
    tiny = ["--seconds", "1", "--rnn_size", "16", "--batch_size", "4", "--seq_length", "8"]
    r = run(["bench", "--profile", "--sample_streams", "2", *tiny])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    at = lines.index("one training step, ms (parts timed alone; recurrence by difference):")
    rows = {line[:40].strip(): float(line[40:].split()[0]) for line in lines[at + 1 :]}
    names = {name.strip() for name, _ in kerasgen.profile_rows(dict.fromkeys(PARTS, 0.0))}
    assert set(rows) == names
    for name in ("input pipeline", "forward: output layer", "optimizer (clip, Adam)"):
        assert rows[name] > 0, name
    # The whole step holds a forward pass, a backward pass and the update.
    step = rows["whole step (its input included)"]
    assert step > rows["forward: recurrence"] + rows["forward: output layer"]
    refused = run(["bench", "--profile", "--no_fused", *tiny])
    assert refused.exit_code == 2 and "--profile times the fused recurrent step" in refused.output


PARTS = (
    "input",
    "step",
    "forward",
    "forward_backward",
    "optimizer",
    "output_forward",
    "output_forward_backward",
    "weight_grads",
    "weight_grads_per_step",
    "weight_grads_one_gemm",
    "weight_grads_one_gemm_bf16",
)


def test_bench_rejects_bad_seconds():
    r = run(["bench", "--seconds", "0"])
    assert r.exit_code == 2 and "--seconds" in r.output
