import numpy as np
import pytest

from kerasgen import rundir
from kerasgen.errors import CheckpointError
from kerasgen.model import ModelConfig, build_model, reset_states, rnn_layers
from kerasgen.reference import generate_reference
from kerasgen.sampler import Sampler
from kerasgen.sampling import SamplingOptions, select_next
from kerasgen.streams import decode_prime, generate_text
from kerasgen.vocab import Vocabulary

V = Vocabulary.from_text("abcdefgh \n")


def tiny(batch, model="lstm"):
    import keras

    keras.utils.set_random_seed(0)
    return build_model(ModelConfig(vocab_size=len(V), model=model, rnn_size=6, num_layers=2), batch)


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn"])
def test_shapes_and_layer_names(family):
    m = tiny(3, family)
    out = m(np.zeros((3, 5), np.int32))
    assert tuple(out.shape) == (3, 5, len(V))
    assert [layer.name for layer in rnn_layers(m)] == [f"{family}_1", f"{family}_2"]


def test_default_lstm_meets_cudnn_conditions():
    for layer in rnn_layers(tiny(2)):
        c = layer.get_config()
        assert c["activation"] == "tanh" and c["recurrent_activation"] == "sigmoid"
        assert c["recurrent_dropout"] == 0 and not c["unroll"] and c["use_bias"]


def test_state_carries_and_resets():
    m = tiny(1)
    x = np.array([[1, 2, 3]], np.int32)
    first = m(x).numpy()
    assert not np.allclose(m(x).numpy(), first)  # state carried over
    reset_states(m)
    np.testing.assert_allclose(m(x).numpy(), first, atol=1e-6)


def test_batch_n_weights_in_batch_1_model_give_same_logits(tmp_path):
    big, small = tiny(4), tiny(1)
    big.set_weights([w * 1.5 for w in big.get_weights()])
    rundir.save_checkpoint(str(tmp_path), "latest", big)
    rundir.load_checkpoint(str(tmp_path), "latest", small)
    x = np.array([[1, 4, 2, 7, 0]], np.int32)
    reset_states(big)
    reset_states(small)
    np.testing.assert_allclose(small(x).numpy()[0], big(np.repeat(x, 4, 0)).numpy()[0], atol=1e-5)


def test_corrupt_checkpoint_is_refused_and_model_untouched(tmp_path):
    m = tiny(1)
    path = rundir.save_checkpoint(str(tmp_path), "latest", m)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    before = [w.copy() for w in m.get_weights()]
    with pytest.raises(CheckpointError, match="is damaged"):  # its checksum no longer matches
        rundir.load_checkpoint(str(tmp_path), "latest", m)
    (tmp_path / "checkpoints.json").unlink()  # unchecked, as runs before checksums
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        rundir.load_checkpoint(str(tmp_path), "latest", m)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    import h5py

    m = tiny(1)
    rundir.save_checkpoint(str(tmp_path), "latest", m, state={"step": 7})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    monkeypatch.setattr(h5py.Group, "create_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        rundir.save_checkpoint(str(tmp_path), "latest", m, state={"step": 8})
    monkeypatch.undo()
    assert rundir.load_checkpoint(str(tmp_path), "latest", m)["step"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints.json",
        "latest.ckpt.h5",
    ]  # no debris


def test_forced_logits_pick_the_expected_id():
    import tensorflow as tf

    logits = tf.constant([[0.0, 50.0, 0.0], [0.0, 0.0, 50.0]])
    prev = tf.constant([0, 0])
    for mode in (0, 1, 2):
        ids = select_next(logits, prev, 3, 11, 1.0, SamplingOptions(sample=mode), space_id=0)
        assert list(ids.numpy()) == [1, 2]
    # top_k=1 leaves only the largest logit even at a huge temperature
    flat = tf.constant([[1.0, 1.1, 0.9]])
    for seed in range(20):
        ids = select_next(flat, tf.constant([0]), 0, seed, 100.0, SamplingOptions(top_k=1), 0)
        assert int(ids[0]) == 1


def test_top_p_keeps_the_nucleus():
    import tensorflow as tf

    logits = tf.math.log(tf.constant([[0.6, 0.3, 0.1]]))
    seen = {
        int(select_next(logits, tf.constant([0]), s, 5, 1.0, SamplingOptions(top_p=0.5), 0)[0])
        for s in range(50)
    }
    assert seen == {0}
    seen = {
        int(select_next(logits, tf.constant([0]), s, 5, 1.0, SamplingOptions(top_p=0.8), 0)[0])
        for s in range(200)
    }
    assert seen == {0, 1}


@pytest.mark.slow  # 600 eager reference steps, three compiled samplers (about 20 s);
# test_starts checks the sampler against the reference in the default run
def test_compiled_generators_match_step_by_step_reference():
    # Exactly the same ids, not just close: the draws are a pure function of
    # (seed, step, row), and the fused logits equal the Keras layers' to rounding.
    m = tiny(3)
    generators = [
        Sampler(m, V, jit_compile=jit, fused=fused)
        for fused, jit in ((True, True), (True, False), (False, True))
    ]
    for options in (
        SamplingOptions(seed=3),
        SamplingOptions(sample=2, seed=4, temperature=1.5),
        SamplingOptions(sample=0),
        SamplingOptions(seed=5, top_k=3, top_p=0.9),
    ):
        expected = generate_reference(m, V, 150, "ab", options)
        for gen in generators:
            fast = gen.generate_ids(150, "ab", options)  # crosses a chunk boundary
            np.testing.assert_array_equal(fast, expected)


def test_same_seed_same_text_and_streams_differ():
    gen = Sampler(tiny(2), V)
    a = generate_text(gen, 60, "a", SamplingOptions(seed=9, temperature=3.0))
    assert a == generate_text(gen, 60, "a", SamplingOptions(seed=9, temperature=3.0))
    assert a != generate_text(gen, 60, "a", SamplingOptions(seed=10, temperature=3.0))
    assert a[0] != a[1] and all(t.startswith("a") and len(t) == 61 for t in a)


def test_decode_prime_escapes():
    assert decode_prime(r"KING\nA\tB\\n") == "KING\nA\tB\\n"


def test_the_numpy_draw_is_the_compiled_samplers():
    # An export's runner draws outside TensorFlow: the same uniform bits for (seed, step,
    # row), and the same id as select_next from the same logits.
    import tensorflow as tf

    from kerasgen.sampling import _uniform, draw_numpy, uniform_numpy

    rng = np.random.default_rng(2)
    for seed in (0, 1, 123_456_789, 2**32 - 1):
        for step in (0, 1, 999, 2**31 - 1):
            for row in (0, 5):
                expected = _uniform(tf.constant(seed, tf.int64), tf.constant(step), row)
                assert uniform_numpy(seed, step, row) == expected.numpy(), (seed, step, row)
        logits = rng.normal(size=(1, 40)).astype(np.float32) * 3
        for step in range(50):
            for temperature in (1.0, 0.5):
                options = SamplingOptions(temperature=temperature, seed=seed)
                picked = select_next(
                    logits, tf.zeros([1], tf.int32), step, seed, temperature, options, -1
                )
                u = uniform_numpy(seed, step)
                assert draw_numpy(logits[0], temperature, u) == int(picked[0]), (seed, step)
