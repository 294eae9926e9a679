"""kerasgen.backward: the recurrent weights' gradients as one GEMM per layer, and --precision."""

import json

import numpy as np
import pytest
from runner import run
from test_fused_bench import ids, model_with_random_weights, training_run

from kerasgen import backward
from kerasgen.fused import FusedModel


def gradients(model, precision, seed=5):
    """The fused forward's gradients of a loss for every trainable weight: autodiff's when
    ``precision`` is None, else through ``backward.Products`` in that precision."""
    import tensorflow as tf

    net = FusedModel(model)
    variables = model.trainable_variables
    tf.random.set_seed(seed)  # the same dropout masks for every precision
    with tf.GradientTape() as tape:
        record = None if precision is None else backward.Products.for_step(net, tape, precision)
        logits, _ = net.forward(tf.constant(ids(0).T), net.read_states(), True, record=record)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(ids(1).T, logits))
    return [
        tf.convert_to_tensor(g).numpy() for g in backward.gradients(tape, loss, variables, record)
    ]


@pytest.mark.parametrize("family", ["lstm", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("keep", [1.0, 0.7])
def test_one_gemm_weight_gradients_equal_autodiffs(family, num_layers, keep):
    model, _ = model_with_random_weights(
        family, num_layers, input_keep_prob=keep, output_keep_prob=keep
    )
    expected, got = gradients(model, None), gradients(model, "float32")
    for variable, e, g in zip(model.trainable_variables, expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5, err_msg=variable.path)
    assert any(np.abs(e).max() > 1e-3 for e in expected)  # gradients that say something


def test_bfloat16_gradients_are_autodiffs_to_bfloat16_rounding():
    # The recurrence's products round their operands to bfloat16 (8 bits of mantissa):
    # every gradient differs from float32 autodiff's, by about that rounding.
    model, _ = model_with_random_weights("lstm", 3)
    expected, got = gradients(model, None), gradients(model, "bfloat16")
    for variable, e, g in zip(model.trainable_variables, expected, got):
        error = np.abs(g - e).max() / np.abs(e).max()
        assert 0 < error < 3e-2, (variable.path, error)


def test_gru_keeps_autodiffs_gradients():
    model, _ = model_with_random_weights("gru", 2)
    assert backward.Products.for_step(FusedModel(model), None, "bfloat16") is None
    for e, g in zip(gradients(model, None), gradients(model, "bfloat16")):
        np.testing.assert_array_equal(g, e)


def test_bfloat16_training_learns_as_float32_does():
    losses, _ = training_run(True, False, steps=6, precision="bfloat16")
    reference, _ = training_run(True, False, steps=6, precision="float32")
    assert losses[-2] < losses[0]
    np.testing.assert_allclose(losses, reference, rtol=1e-2)


def test_auto_precision_follows_the_cpus_instructions():
    resolve = backward.resolve_precision
    assert resolve("auto", True, {"avx2", "avx512_bf16"}) == "bfloat16"
    assert resolve("auto", True, {"amx_bf16", "amx_tile"}) == "bfloat16"
    assert resolve("auto", True, {"avx2", "fma"}) == "float32"
    assert resolve("auto", False, {"avx512_bf16"}) == "float32"  # the Keras layers' step
    assert resolve("float32", True, {"avx512_bf16"}) == "float32"
    assert resolve("bfloat16", True, set()) == "bfloat16"


def test_train_records_the_precision_it_computed_in(data_dir, tmp_path):
    save = tmp_path / "run"
    tiny = [
        "--data_dir",
        str(data_dir),
        "--rnn_size",
        "8",
        "--batch_size",
        "4",
        "--seq_length",
        "8",
    ]
    r = run(["train", *tiny, "--save_dir", str(save), "--num_epochs", "1"])
    assert r.exit_code == 0, r.output
    recorded = json.loads((save / "config.json").read_text())["train"]["precision"]
    assert recorded == backward.resolve_precision("auto", True)  # the default, resolved here
    # A continued run computes in the precision asked for on this machine, not the saved one.
    for precision in ("bfloat16", "float32"):
        more = ["--init_from", str(save), "--num_epochs", "2", "--precision", precision]
        r = run(["train", *tiny, "--save_dir", str(save), *more])
        assert r.exit_code == 0, r.output
        assert json.loads((save / "config.json").read_text())["train"]["precision"] == precision


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--precision", "float16"], "'float16' is not one of"),
        (["--precision", "bfloat16", "--no_fused"], "--precision bfloat16 is the fused step's"),
        (["--precision", "bfloat16", "--model", "transformer"], "the fused recurrent step's"),
    ],
)
def test_train_refuses_a_precision_it_cannot_compute_in(data_dir, tmp_path, flags, message):
    save = tmp_path / "run"
    r = run(
        ["train", "--data_dir", str(data_dir), "--save_dir", str(save), "--num_epochs", "1", *flags]
    )
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (save / "config.json").exists()
