"""Every model family (bigram, rnn, gru, lstm, transformer) and the word level.

Tiny sizes throughout (V = 10 characters, width 16, 2 layers), as torch-rnn's tests.
"""

import json
import math

import numpy as np
import pytest
from runner import run
from tiny import TINY_TEXT

from kerasgen import data, rundir
from kerasgen.evaluate import evaluate_loss, stream_layout
from kerasgen.model import ModelConfig, build_model, context_length, reset_states
from kerasgen.reference import generate_reference
from kerasgen.sampler import Sampler
from kerasgen.sampling import SamplingOptions
from kerasgen.streams import generate_text
from kerasgen.vocab import UNKNOWN_TOKEN, Vocabulary, WordVocabulary, tokenize, vocabulary_from_json

FAMILIES = ["bigram", "rnn", "gru", "lstm", "transformer"]
V = Vocabulary.from_text(TINY_TEXT)
CONTEXT = 8


def tiny_config(family, vocab_size=None):
    return ModelConfig(
        vocab_size=len(V) if vocab_size is None else vocab_size,
        model=family,
        rnn_size=16,
        num_layers=2,
        n_head=4,
        context=CONTEXT if family == "transformer" else 0,
    )


def tiny(family, batch, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return build_model(tiny_config(family), batch)


@pytest.mark.parametrize("family", FAMILIES)
def test_output_shapes(family):
    model = tiny(family, 3)
    assert tuple(model(np.zeros((3, CONTEXT), np.int32)).shape) == (3, CONTEXT, len(V))
    assert tuple(model(np.zeros((3, 1), np.int32)).shape) == (3, 1, len(V))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_training_steps_reduce_the_loss(family):
    import keras

    from kerasgen.steps import compile_steps

    model = tiny(family, 4)
    x, y = data.stream_batches(V.encode(TINY_TEXT), 4, CONTEXT)
    train_step, eval_step = compile_steps(
        model, keras.optimizers.Adam(0.01), fused=family in ("rnn", "gru", "lstm")
    )

    def loss():
        reset_states(model)
        return np.mean([float(eval_step(a, b)) for a, b in data.make_dataset(x[:8], y[:8])])

    before = loss()
    for _ in range(3):
        reset_states(model)
        for a, b in data.make_dataset(x, y):
            train_step(a, b)
    after = loss()
    assert after < before - 0.3, (before, after)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip_gives_identical_logits(family, tmp_path):
    trained = tiny(family, 2, seed=1)
    trained.set_weights(
        [w + 0.1 * np.random.default_rng(2).normal(size=w.shape) for w in trained.get_weights()]
    )
    rundir.write_run(str(tmp_path), tiny_config(family), {}, V)
    rundir.save_checkpoint(str(tmp_path), "latest", trained)
    saved = rundir.read_run(str(tmp_path))
    assert saved.model_config.model == family  # the family picks the builder
    loaded = build_model(saved.model_config, 2)
    rundir.load_checkpoint(str(tmp_path), "latest", loaded)
    x = np.array([[1, 4, 2, 7, 0, 3], [5, 5, 1, 0, 2, 6]], np.int32)
    reset_states(trained)
    reset_states(loaded)
    np.testing.assert_array_equal(loaded(x).numpy(), trained(x).numpy())


@pytest.mark.parametrize(
    "family",
    [  # the transformer's check against the step-by-step reference is slow (13 s)
        pytest.param(f, marks=pytest.mark.slow) if f == "transformer" else f for f in FAMILIES
    ],
)
def test_sampling_works(family):
    model = tiny(family, 2)
    options = SamplingOptions(seed=5)
    ids = Sampler(model, V).generate_ids(20, "KING", options)
    assert ids.shape == (2, 20) and ids.min() >= 0 and ids.max() < len(V)
    np.testing.assert_array_equal(Sampler(model, V).generate_ids(20, "KING", options), ids)
    assert generate_text(Sampler(model, V), 5, "KING", options)[0].startswith("KING")
    # The recurrent families and the bigram are checked against the step-by-step
    # reference in test_model_sampling and test_bigram; the transformer here:
    if family == "transformer":
        np.testing.assert_array_equal(  # 140 > one 128-token compiled chunk
            Sampler(model, V).generate_ids(140, "KING", options),
            generate_reference(model, V, 140, "KING", options),
        )


@pytest.mark.parametrize("family,fused", [(f, True) for f in FAMILIES] + [("lstm", False)])
def test_streams_of_one_sampler_read_in_turns_keep_their_own_text(family, fused):
    # Each stream owns its state: reading two in turns (as a server or a notebook
    # may) gives each exactly the text it gives alone, across several chunks.
    sampler = Sampler(tiny(family, 2), V, fused=fused)
    a, b = SamplingOptions(seed=1, temperature=2.0), SamplingOptions(seed=2, temperature=2.0)
    alone = [sampler.generate_ids(300, "KING", a), sampler.generate_ids(300, "QUEEN:\n", b)]
    streams = [sampler.stream_ids(300, "KING", a), sampler.stream_ids(300, "QUEEN:\n", b)]
    pieces = [[], []]
    for _ in range(3):
        for k in (0, 1):
            pieces[k].append(next(streams[k]))
    for k in (0, 1):
        np.testing.assert_array_equal(np.concatenate(pieces[k], axis=1), alone[k])
    assert not np.array_equal(alone[0], alone[1])


@pytest.mark.parametrize(
    "family",
    [  # one per step provider, all slow (10 to 16 s each); test_python_lexer's server rows
        # test joins and streams rows in the default run
        pytest.param("bigram", marks=pytest.mark.slow),
        pytest.param("lstm", marks=pytest.mark.slow),
        pytest.param("transformer", marks=pytest.mark.slow),
    ],
)
def test_rows_join_leave_and_move_while_others_stream(family):
    # Continuous batching: streams join a running batch, leave it and are packed into a
    # lower row, each with its own prime and settings (a constraint, top-k, top-p,
    # --sample 2); the batch runs on the smallest size that holds its rows. Each stream
    # takes exactly the ids it takes alone.
    from kerasgen.sampler import Rows

    base, samplers = tiny(family, 1), {}

    def sampler_for(size):
        if size not in samplers:
            model = tiny(family, size)
            model.set_weights(base.get_weights())
            samplers[size] = Sampler(model, V, "\n", jit_compile=False)
        return samplers[size]

    streams = {
        "A": ("KING", SamplingOptions(seed=1, temperature=1.5)),
        "B": ("QUEEN:\n", SamplingOptions(seed=2, top_k=5, constrain="python")),
        "C": ("What", SamplingOptions(seed=3, top_p=0.9, sample=2)),
    }
    alone = {k: sampler_for(1).generate_ids(1100, *v)[0] for k, v in streams.items()}
    rows, where, got = Rows(4, sampler_for, sizes=[1, 2, 4]), {}, {k: [] for k in streams}
    events = {
        0: ("join", "A", 0),
        1: ("join", "B", 1),
        2: ("join", "C", 3),
        4: ("leave", "A", None),
        5: ("move", "C", 0),
    }
    for chunk in range(8):
        what, name, row = events.get(chunk, (None, None, None))
        if what == "join":
            rows.join(row, *streams[name])
            where[name] = row
        elif what == "leave":
            rows.leave(where.pop(name))
        elif what == "move":
            rows.move(where[name], row)
            where[name] = row
        taken = rows.run()
        for name, r in where.items():
            got[name].append(taken.ids[r, taken.start[r] :])
    for name, pieces in got.items():
        ids = np.concatenate(pieces)
        assert len(ids) > 400
        np.testing.assert_array_equal(ids, alone[name][: len(ids)])
    assert sorted(samplers) == [1, 2, 4]


# ---------------------------------------------------------------- transformer


def test_transformer_is_causal_and_limited_to_its_context():
    model = tiny("transformer", 1)
    assert context_length(model) == CONTEXT
    x = np.array([[1, 2, 3, 4, 5, 6, 7, 8]], np.int32)
    changed = x.copy()
    changed[0, 5:] = 0
    np.testing.assert_allclose(
        model(changed).numpy()[0, :5], model(x).numpy()[0, :5], atol=1e-6
    )  # the future never leaks into the past
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match="PositionEmbedding"):
        model(np.zeros((1, CONTEXT + 1), np.int32))  # no position past the context


def test_transformer_sampling_slides_the_window_past_a_long_prime():
    model = tiny("transformer", 1)
    prime = TINY_TEXT[: 3 * CONTEXT]  # longer than the context: only its tail is seen
    options = SamplingOptions(seed=9)
    np.testing.assert_array_equal(
        Sampler(model, V, jit_compile=False).generate_ids(20, prime, options),
        generate_reference(model, V, 20, prime, options),
    )
    tail_only = Sampler(model, V).generate_ids(20, prime[-CONTEXT:], options)
    np.testing.assert_array_equal(Sampler(model, V).generate_ids(20, prime, options), tail_only)


def test_transformer_evaluation_scores_each_target_once_with_half_a_context():
    model = tiny("transformer", 2)
    ids = V.encode(TINY_TEXT[:61])
    # Brute force: target p of a stream is scored by the window that starts at
    # 0 if p < C, else at hop * (floor((p - C) / hop) + 1), hop = C / 2.
    hop = CONTEXT // 2
    x, y, mask = stream_layout(ids, 2)
    total = 0.0
    for s in range(2):
        for p in range(x.shape[1]):
            if not mask[s, p]:
                continue
            start = 0 if p < CONTEXT else hop * ((p - CONTEXT) // hop + 1)
            window = x[s, start : start + CONTEXT]
            logits = model(np.stack([window, window]).astype(np.int32)).numpy()[0, p - start]
            total += math.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[y[s, p]]
            assert p - start >= min(p, hop)  # at least half a context before each target
    assert evaluate_loss(model, ids) == pytest.approx(total / (len(ids) - 1), abs=1e-5)


def test_bad_transformer_shapes_are_usage_errors(data_dir, tmp_path):
    r = run(
        [
            "train",
            "--model",
            "transformer",
            "--n_embd",
            "30",
            "--n_head",
            "4",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "s"),
        ],
    )
    assert r.exit_code == 2 and "--n_head 4 must divide --rnn_size" in r.output
    r = run(
        [
            "train",
            "--dropout",
            "0.1",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "s"),
        ],
    )
    assert r.exit_code == 2 and "--dropout applies to --model transformer" in r.output
    r = run(
        ["train", "--n_head", "2", "--data_dir", str(data_dir), "--save_dir", str(tmp_path / "s")],
    )
    assert r.exit_code == 2 and "--n_head" in r.output and "transformer only" in r.output
    r = run(
        [
            "train",
            "--max_vocab",
            "50",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "s"),
        ],
    )
    assert r.exit_code == 2 and "--max_vocab" in r.output and "--level word only" in r.output
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # trains twice, samples and evaluates through the CLI
def test_transformer_from_the_cli_trains_resumes_samples_and_evaluates(data_dir, tmp_path):
    save, logs = tmp_path / "tf", str(tmp_path / "logs")
    common = [
        "--data_dir",
        str(data_dir),
        "--save_dir",
        str(save),
        "--log_dir",
        logs,
        "--batch_size",
        "4",
        "--seed",
        "1",
        "--learning_rate",
        "0.01",
    ]
    r = run(
        [
            "train",
            "--model",
            "transformer",
            "--n_embd",
            "16",
            "--n_head",
            "2",
            "--num_layers",
            "1",
            "--seq_length",
            "12",
            "--dropout",
            "0.1",
            "--num_epochs",
            "1",
            *common,
        ]
    )
    assert r.exit_code == 0, r.output
    assert "parameters" in r.output
    config = json.loads((save / "config.json").read_text())["model"]
    assert (config["model"], config["context"], config["n_head"], config["dropout"]) == (
        "transformer",
        12,
        2,
        0.1,
    )
    # Resume: architecture and context come from the run, not the defaults.
    r = run(["train", "--init_from", str(save), "--num_epochs", "2", *common])
    assert r.exit_code == 0, r.output
    assert rundir.read_checkpoint_state(str(save), "latest")["epoch"] == 2
    r = run(["sample", "--save_dir", str(save), "-n", "30", "--prime", "KING", "--seed", "2"])
    assert r.exit_code == 0 and r.output.startswith("KING") and len(r.output) >= 34
    r = run(["evaluate", "--save_dir", str(save), "--json"])
    assert r.exit_code == 0 and math.isfinite(json.loads(r.output)["nats_per_char"])


# ---------------------------------------------------------------- word level

ROUND_TRIP = (
    "First Citizen:\tBefore we proceed, hear me speak.\n\n\n"
    "All:  Speak, speak!  \n\t\tdef f(x):  # don't -- 'quoted' (1.5e3)...\r\n"
    "Ünïcode—dash … end\n"
)


def test_word_tokens_reproduce_the_text_exactly():
    tokens = tokenize(ROUND_TRIP)
    assert "".join(tokens) == ROUND_TRIP
    assert tokens[:6] == ["First", " Citizen", ":", "\t", "Before", " we"]
    assert tokens[tokens.index(".") + 1 : tokens.index(".") + 4] == ["\n", "\n", "\n"]
    assert "\t\t" in tokens and "  " in tokens and "'" in tokens and " '" in tokens
    vocab = WordVocabulary.from_text(ROUND_TRIP, max_vocab=1000)
    assert vocab.decode(vocab.encode(ROUND_TRIP)) == ROUND_TRIP
    assert vocabulary_from_json(vocab.to_json()) == vocab


def test_max_vocab_maps_rare_tokens_to_unknown():
    vocab = WordVocabulary.from_text("a b a c a b\n", max_vocab=3)
    # The space is always kept (it takes the last place), so unknown words keep theirs.
    assert vocab.tokens == (" a", " b", " ") and len(vocab) == 4  # + the unknown token
    assert vocab.unknown_count == 3  # the first "a", the "c" of " c" and the newline
    ids = vocab.encode("b a c")
    assert list(ids) == [vocab.unknown_id, 0, 2, vocab.unknown_id]
    assert vocab.decode(ids) == f"{UNKNOWN_TOKEN} a {UNKNOWN_TOKEN}" and vocab.unknown("zzz") == []
    assert vocab.spelling_nats("c") > vocab.spelling_nats("a") > 0  # rarer costs more


def test_word_level_holds_out_the_same_characters_as_char_level(data_dir):
    vocab, train_ids, val_ids, train_chars, _ = data.load_token_splits(
        str(data_dir), "utf-8", 0.1, "word", max_vocab=50
    )
    _, char_val = data.split(V.encode(TINY_TEXT), 0.1)
    train_text, val_text = data.split_text(TINY_TEXT, 0.1)
    assert val_text == V.decode(char_val) and train_chars == len(train_text)
    assert vocab.decode(val_ids) == val_text and vocab.decode(train_ids) == train_text
    assert len(val_ids) == len(tokenize(val_text)) and len(train_ids) == len(tokenize(train_text))
    assert len(vocab) <= 51 and set(vocab.tokens) <= set(tokenize(TINY_TEXT)) | {" "}


@pytest.mark.slow  # trains through the CLI; test_levels trains word-level runs in the default run
def test_word_level_from_the_cli(data_dir, tmp_path):
    save, logs = tmp_path / "word", str(tmp_path / "logs")
    r = run(
        [
            "train",
            "--level",
            "word",
            "--max_vocab",
            "20",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(save),
            "--log_dir",
            logs,
            "--rnn_size",
            "16",
            "--batch_size",
            "4",
            "--seq_length",
            "8",
            "--num_epochs",
            "2",
            "--seed",
            "1",
        ]
    )
    assert r.exit_code == 0, r.output
    vocab = rundir.read_run(str(save)).vocab
    assert vocab.level == "word" and len(vocab) == 21
    # The prime is tokenized as in training; a word it never saw is fine (<unk>).
    r = run(
        [
            "sample",
            "--save_dir",
            str(save),
            "-n",
            "12",
            "--prime",
            r"QUEEN:\nZyzzyva",
            "--seed",
            "3",
        ]
    )
    assert r.exit_code == 0 and r.output.startswith("QUEEN:\nZyzzyva")
    assert len(r.output) > len("QUEEN:\nZyzzyva\n") and "\\n" not in r.output  # real text
    r = run(["evaluate", "--save_dir", str(save), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    val_text = data.split_text(TINY_TEXT, 0.1)[1]
    assert result["level"] == "word" and result["chars"] == len(val_text) - len(
        vocab.encode_pieces(val_text)[1][0]
    )  # all but what the first token stands for
    # Per char = (per token * tokens + the spelling of unknown targets) / chars.
    assert result["unknown_targets"] > 0
    assert result["nats_per_char"] > result["nats_per_token"] * result["targets"] / result["chars"]
    # Resuming keeps the level and the vocabulary.
    r = run(
        [
            "train",
            "--init_from",
            str(save),
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(save),
            "--log_dir",
            logs,
            "--batch_size",
            "4",
            "--seq_length",
            "8",
            "--num_epochs",
            "3",
        ]
    )
    assert r.exit_code == 0, r.output
    assert rundir.read_run(str(save)).vocab == vocab


@pytest.mark.slow  # trains three runs to compare (test_bigram's compare test is the default run's)
def test_compare_lists_levels_and_families(data_dir, tmp_path):
    logs = str(tmp_path / "logs")
    runs = {
        "tf": ["--model", "transformer", "--seq_length", "8"],
        "word": ["--level", "word", "--seq_length", "8"],
    }
    for name, flags in runs.items():
        r = run(
            [
                "train",
                *flags,
                "--data_dir",
                str(data_dir),
                "--save_dir",
                str(tmp_path / name),
                "--log_dir",
                logs,
                "--rnn_size",
                "16",
                "--batch_size",
                "4",
                "--num_epochs",
                "1",
            ]
        )
        assert r.exit_code == 0, r.output
    r = run(["compare", str(tmp_path / "tf"), str(tmp_path / "word"), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [(row["model"], row["level"]) for row in rows] == [
        ("transformer 2x16 h4 ctx8", "char"),
        ("lstm 2x16", "word"),
    ]
    # The same held-out characters; the word row scores all but its first token's.
    assert rows[0]["loss"]["text"] == rows[1]["loss"]["text"]
    assert 0 <= rows[0]["loss"]["targets"] - rows[1]["loss"]["chars"] < 20
