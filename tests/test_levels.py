"""The token levels: word tokens that carry their space, byte-level BPE, streamed decoding.

Tiny texts and models throughout (TINY_TEXT, vocabularies of at most 300 tokens,
width 16), as in test_families.
"""

import json
import math
import pathlib
import re

import numpy as np
import pytest
from runner import run
from tiny import TINY_TEXT

from kerasgen import data, rundir
from kerasgen.model import ModelConfig, build_model
from kerasgen.sampler import Sampler
from kerasgen.sampling import SamplingOptions
from kerasgen.streams import generate_text, stream_text
from kerasgen.vocab import (
    UNKNOWN_TOKEN,
    BpeVocabulary,
    PlainDecoder,
    Vocabulary,
    WordVocabulary,
    byte_chars,
    tokenize,
    vocabulary_from_json,
)

FAMILIES = ["bigram", "rnn", "gru", "lstm", "transformer"]
OLD_WORD_RUN = pathlib.Path(__file__).parent / "fixtures" / "word-run-0.1.0"
# Punctuation, tabs, indentation, blank lines, trailing spaces, CRLF, Unicode
# (accents, CJK, an emoji, a non-breaking space), no final newline.
MIXED = (
    "First Citizen:\tBefore we proceed, hear me speak.\n\n\n"
    "All:  Speak, speak!  \n\t\tdef f(x):  # don't -- 'quoted' (1.5e3)...\r\n"
    "    indented   line\r\n \n"
    "Ünïcode—dash … 日本語 🙂 end\u00a0nbsp\n\n KING"
)
BPE = BpeVocabulary.from_text(TINY_TEXT, 300)


def tiny_model(family, vocab_size, batch=1, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return build_model(
        ModelConfig(
            vocab_size=vocab_size,
            model=family,
            rnn_size=16,
            num_layers=2,
            n_head=4,
            context=8 if family == "transformer" else 0,
        ),
        batch,
    )


# ---------------------------------------------------------------- word level


def test_word_level_round_trips_any_text():
    assert "".join(tokenize(MIXED)) == MIXED
    vocab = WordVocabulary.from_text(MIXED, max_vocab=1000)
    assert vocab.decode(vocab.encode(MIXED)) == MIXED
    ids, pieces = vocab.encode_pieces(MIXED)
    assert "".join(pieces) == MIXED and len(pieces) == len(ids)
    assert vocabulary_from_json(vocab.to_json()) == vocab
    # Indentation keeps its shape: the run less its last space, then " indented".
    assert tokenize("\n    indented") == ["\n", "   ", " indented"]
    assert tokenize("\t the\r\n") == ["\t", " the", "\r", "\n"]


def test_words_carry_the_space_before_them_so_samples_cannot_glue():
    tokens = tokenize(TINY_TEXT)
    # No word or mark ever follows a lone space token: the space is part of it.
    assert not [(a, b) for a, b in zip(tokens, tokens[1:]) if a == " " and b[0] != "\n"]
    vocab = WordVocabulary.from_text(TINY_TEXT, max_vocab=1000)
    words = [t for t in vocab.tokens if re.search(r"\w", t)]
    bare = {t for t in words if not t.startswith(" ")}
    # The only words without their space are those the text has at line starts,
    # so a model never learns to put a word straight after another.
    assert bare == {"KING", "Now", "made", "QUEEN", "What"}
    line_starts = {tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "\n"}
    assert bare <= line_starts and all(t in words for t in (" the", " king", " discontent"))


def test_the_sampler_never_draws_a_word_straight_after_a_word():
    import tensorflow as tf

    from kerasgen.sampling import glue_rule, select_next

    vocab = WordVocabulary.from_text(TINY_TEXT, max_vocab=1000)
    ends, starts = glue_rule(vocab)
    tokens = tokenize(TINY_TEXT)
    pairs = {(vocab.token_id(a), vocab.token_id(b)) for a, b in zip(tokens, tokens[1:])}
    assert not [(a, b) for a, b in pairs if ends[a] and starts[b]]  # never in the text
    king, the, newline = vocab.token_id("KING"), vocab.token_id(" the"), vocab.token_id("\n")
    logits = tf.one_hot([king, king], len(vocab)) * 50.0  # KING is by far the likeliest
    for sample in (0, 1):
        options = SamplingOptions(sample=sample, seed=1)
        picked = select_next(
            logits, tf.constant([the, newline]), 0, 1, 1.0, options, -1, (ends, starts)
        ).numpy()
        assert picked[1] == king and picked[0] != king and not starts[picked[0]]
    # A word-level model's samples: no two tokens that would run two words together.
    model = tiny_model("lstm", len(vocab), batch=4)
    ids = Sampler(model, vocab).generate_ids(200, "", SamplingOptions(seed=3, temperature=3.0))
    for row in ids:
        assert not [(a, b) for a, b in zip(row, row[1:]) if ends[a] and starts[b]]
    assert glue_rule(BPE) is None  # subwords join by design


def test_unknown_words_keep_the_space_before_them():
    vocab = WordVocabulary.from_text(TINY_TEXT, max_vocab=1000)
    space, unknown, king = vocab.index[" "], vocab.unknown_id, vocab.index["KING"]
    ids, pieces = vocab.encode_pieces("What Zyzzyva KING\nZyzzyva")
    # " Zyzzyva": the space, then <unk>; " KING" (never seen mid-line): the space,
    # then "KING" as seen at line starts; a bare unknown word: <unk> alone.
    assert list(ids) == [
        vocab.index["What"],
        space,
        unknown,
        space,
        king,
        vocab.index["\n"],
        unknown,
    ]
    assert pieces == ["What", " ", "Zyzzyva", " ", "KING", "\n", "Zyzzyva"]
    assert vocab.decode(ids) == f"What {UNKNOWN_TOKEN} KING\n{UNKNOWN_TOKEN}"
    # The space stays in even the smallest vocabulary.
    assert WordVocabulary.from_text(TINY_TEXT, max_vocab=1).tokens == (" ",)


def test_old_word_run_folders_load_with_their_own_tokenizer(tmp_path):
    """A word-level run trained before words carried their space (its vocab.json has
    no version) samples and evaluates exactly as it did."""
    assert "version" not in json.loads((OLD_WORD_RUN / "vocab.json").read_text())
    vocab = rundir.read_run(str(OLD_WORD_RUN)).vocab
    assert vocab.level == "word" and vocab.version == 1
    assert [vocab.decode([i]) for i in vocab.encode("QUEEN:\nZyzzyva the")] == [
        "QUEEN",
        ":",
        "\n",
        UNKNOWN_TOKEN,
        " ",
        "the",
    ]  # the old tokens
    assert json.loads(vocab.to_json()) == json.loads((OLD_WORD_RUN / "vocab.json").read_text())
    text = tmp_path / "input.txt"
    text.write_text(TINY_TEXT, encoding="utf-8")
    r = run(["evaluate", "--save_dir", str(OLD_WORD_RUN), "--text", str(text), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    # As kerasgen 0.1.0 (the commit before this tokenizer) printed for this run and text.
    assert (result["targets"], result["chars"], result["unknown_targets"]) == (635, 1460, 72)
    assert result["nats_per_char"] == pytest.approx(1.5180862332918417, rel=1e-4)
    r = run(
        ["sample", "--save_dir", str(OLD_WORD_RUN), "-n", "10", "--prime", "KING", "--seed", "1"]
    )
    assert r.exit_code == 0 and r.output.startswith("KING")


# ---------------------------------------------------------------- bpe level


def test_bpe_round_trips_any_text_and_accepts_any_prime():
    assert 256 < len(BPE) <= 300
    assert BPE.decode(BPE.encode(MIXED)) == MIXED  # CJK and the emoji were never seen
    ids, pieces = BPE.encode_pieces(MIXED)
    assert "".join(pieces) == MIXED and len(pieces) == len(ids)
    assert BPE.unknown(MIXED) == [] and len(BPE.encode("日")) == 3  # one token per byte
    assert BPE.token_id(" the") is not None  # learned: a word with its space
    newline = BPE.token_id("\n")
    assert newline is not None and BPE.index["\n"] == newline
    for prime in ("", "\n", "\n\nKING", " the", "日本", "KING:\n"):
        ids = BPE.encode("\n" + prime)
        assert ids[0] == newline and BPE.decode(ids) == "\n" + prime
    # Every newline is one token of its own, whatever surrounds it.
    assert list(BPE.encode("a\n\n \nb")).count(newline) == 3


def test_bpe_vocabulary_json_round_trip_encodes_identically():
    obj = json.loads(BPE.to_json())
    assert obj["level"] == "bpe" and obj["tokenizer"]["model"]["type"] == "BPE"
    loaded = vocabulary_from_json(BPE.to_json())
    assert isinstance(loaded, BpeVocabulary) and loaded == BPE and len(loaded) == len(BPE)
    np.testing.assert_array_equal(loaded.encode(MIXED + TINY_TEXT), BPE.encode(MIXED + TINY_TEXT))
    assert loaded.index == BPE.index
    # A tokenizer that is not byte-level, or not a tokenizer, is refused.
    missing_byte = json.loads(BPE.to_json())
    del missing_byte["tokenizer"]["model"]["vocab"][byte_chars()[0xE6]]
    with pytest.raises(ValueError, match="malformed"):
        vocabulary_from_json(json.dumps(missing_byte))
    with pytest.raises(ValueError, match="malformed"):
        vocabulary_from_json(json.dumps({"level": "bpe", "version": 1, "tokenizer": {}}))
    with pytest.raises(ValueError, match="256"):
        BpeVocabulary.from_text(TINY_TEXT, 100)


def test_streaming_decoder_holds_back_split_characters():
    ids = BPE.encode(MIXED)
    for size in (1, 2, 3, 5):
        decoder = BPE.decoder()
        pieces = [decoder.decode(ids[i : i + size]) for i in range(0, len(ids), size)]
        assert "".join(pieces) + decoder.flush() == BPE.decode(ids) == MIXED
    decoder = BPE.decoder()
    first, second = BPE.encode("日")[:2], BPE.encode("日")[2:]
    assert decoder.decode(first) == "" and decoder.decode(second) == "日"
    # Bytes that never complete a character end as U+FFFD, as decode gives them.
    decoder = BPE.decoder()
    assert decoder.decode(first) + decoder.flush() == BPE.decode(first) == "\ufffd"
    # Char and word levels: every id is whole characters.
    assert isinstance(Vocabulary.from_text("ab").decoder(), PlainDecoder)


def _chain_bigram(vocab, ids):
    """A bigram whose most likely next token after ids[k] is ids[k + 1] (cyclically),
    and ids[0] after anything else: argmax sampling repeats ``ids`` for ever."""
    model = tiny_model("bigram", len(vocab))
    table = np.zeros((len(vocab), len(vocab)), np.float32)
    table[:, ids[0]] = 10.0
    for a, b in zip(ids, np.roll(ids, -1)):
        table[a, b] = 20.0
    model.get_layer("logits").set_weights([table])
    return model


def test_sampler_stream_decodes_characters_split_across_chunks():
    from kerasgen.sampler import CHUNK

    ids = BPE.encode("日")  # three byte tokens; CHUNK is not a multiple of 3
    assert len(ids) == 3 and CHUNK % 3
    sampler = Sampler(_chain_bigram(BPE, ids), BPE, "\n")
    options = SamplingOptions(sample=0)
    n = 3 * CHUNK
    pieces = [p[0] for p in stream_text(sampler, n, "", options)]
    assert "".join(pieces) == BPE.decode(sampler.generate_ids(n, "", options)[0]) == "日" * CHUNK
    # Decoding each chunk on its own would have broken characters at the chunk ends.
    naive = "".join(BPE.decode(chunk[0]) for chunk in sampler.stream_ids(n, "", options))
    assert "\ufffd" in naive
    # A sample that ends inside a character shows its bytes as U+FFFD, as decode does.
    assert generate_text(sampler, 4, "", options) == ["日\ufffd"]
    # --sample 2 finds the space token (none is generated here, so it stays greedy).
    assert generate_text(sampler, 6, "", SamplingOptions(sample=2, seed=1)) == ["日日"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_builds_and_samples_at_bpe_level(family):
    model = tiny_model(family, len(BPE), batch=2)
    sampler = Sampler(model, BPE, "\n")
    options = SamplingOptions(seed=3)
    prime = "QUEEN:\nZyzzyva 日本"
    ids = sampler.generate_ids(40, prime, options)
    assert ids.shape == (2, 40) and ids.min() >= 0 and ids.max() < len(BPE)
    texts = generate_text(sampler, 40, prime, options)
    assert texts == [prime + BPE.decode(row) for row in ids]


# ---------------------------------------------------------------- the CLI


def _train(*flags):
    r = run(["train", *flags])
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.slow  # trains twice through the CLI; the other BPE tests here are
# in the default run
def test_bpe_level_from_the_cli(data_dir, tmp_path, trained_run):
    save, logs = tmp_path / "bpe", str(tmp_path / "logs")
    common = [
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
    ]
    _train(
        "--level",
        "bpe",
        "--vocab_size",
        "300",
        "--rnn_size",
        "16",
        "--num_epochs",
        "2",
        "--seed",
        "1",
        *common,
    )
    saved = rundir.read_run(str(save))
    vocab = saved.vocab
    assert isinstance(vocab, BpeVocabulary) and len(vocab) == saved.model_config.vocab_size
    train_text, val_text = data.split_text(TINY_TEXT, 0.1)
    assert vocab == BpeVocabulary.from_text(train_text, 300)  # learned from the training split
    assert saved.preamble == "\n" and saved.train_config["vocab_size"] == 300

    # Any prime: characters the text never had are bytes.
    r = run(
        [
            "sample",
            "--save_dir",
            str(save),
            "-n",
            "20",
            "--prime",
            r"QUEEN:\nZyzzyva 日本",
            "--seed",
            "3",
        ]
    )
    assert r.exit_code == 0 and r.output.startswith("QUEEN:\nZyzzyva 日本"), r.output

    r = run(["evaluate", "--save_dir", str(save), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    ids, pieces = vocab.encode_pieces(val_text)
    assert result["level"] == "bpe" and result["targets"] == len(ids) - 1
    assert result["chars"] == len(val_text) - len(pieces[0]) and result["unknown_targets"] == 0
    # Per char: the same nats over the characters the targets stand for.
    assert result["nats_per_char"] == pytest.approx(
        result["nats_per_token"] * result["targets"] / result["chars"]
    )
    r = run(["evaluate", "--save_dir", str(save), "--text", str(data_dir / "input.txt"), "--json"])
    assert r.exit_code == 0 and math.isfinite(json.loads(r.output)["start_penalty"])

    # compare: the same held-out characters as a character-level run.
    r = run(["compare", str(trained_run[1]), str(save), "--data_dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["level"] for row in rows] == ["char", "bpe"]
    assert 0 <= rows[0]["loss"]["targets"] - rows[1]["loss"]["chars"] < 10

    # Resuming keeps the level and the tokenizer; a different size is refused.
    _train("--init_from", str(save), "--num_epochs", "3", *common)
    assert rundir.read_run(str(save)).vocab == vocab
    assert rundir.read_checkpoint_state(str(save), "latest")["epoch"] == 3
    r = run(
        ["train", "--init_from", str(save), "--vocab_size", "400", "--num_epochs", "4", *common],
    )
    assert r.exit_code == 2 and "keeps its vocabulary (--vocab_size 300)" in r.output


def test_vocab_size_is_refused_off_bpe_level(data_dir, tmp_path):
    save = tmp_path / "s"
    for flags, hint in (
        (["--vocab_size", "512"], "--level bpe only"),
        (["--level", "word", "--vocab_size", "512"], "--level bpe only"),
        (["--level", "bpe", "--max_vocab", "50"], "--level word only"),
        (["--level", "bpe", "--vocab_size", "100"], "256"),
    ):
        r = run(["train", *flags, "--data_dir", str(data_dir), "--save_dir", str(save)])
        assert r.exit_code == 2 and hint in r.output, r.output
    assert not save.exists()


# ---------------------------------------------------------------- real words


class _Texts:
    """What count_real_words uses of a loaded model: a sampler (its batch, its vocabulary's
    decoders, its ids) whose one chunk decodes to set texts."""

    def __init__(self, texts):
        self.texts, self.asked, self.batch, self.vocab = texts, [], len(texts), self

    def sampler(self, num_samples):
        self.asked.append(num_samples)
        return self

    def decoder(self):
        return _AsIs()

    def stream_ids(self, n, prime, options):
        yield self.texts


class _AsIs:
    """A decoder of 'ids' that are already text."""

    def decode(self, piece):
        return piece

    def flush(self):
        return ""


def test_real_words_counts_glued_and_unknown_words_as_not_found():
    from kerasgen.evaluation import count_real_words

    model = _Texts(["the king is gone,\nthe queen", "theking <unk> KING RICHARD:"])
    result = count_real_words(model, 2, 40, training_text=TINY_TEXT)
    # Words: the king is gone the queen | theking unk KING RICHARD
    assert model.asked == [2]
    assert (result.found, result.total) == (7, 10)
    assert set(result.missing) == {"queen", "theking", "unk"}  # the text has QUEEN only
    assert result.to_dict(SamplingOptions())["rate"] == pytest.approx(0.7)


def test_evaluate_real_words_at_word_level(data_dir, tmp_path):
    save = tmp_path / "w"
    _train(
        "--level",
        "word",
        "--data_dir",
        str(data_dir),
        "--save_dir",
        str(save),
        "--log_dir",
        str(tmp_path / "logs"),
        "--rnn_size",
        "16",
        "--batch_size",
        "4",
        "--seq_length",
        "8",
        "--num_epochs",
        "1",
        "--seed",
        "1",
    )
    r = run(["evaluate", "--save_dir", str(save), "--real_words", "3", "-n", "40", "--json"])
    assert r.exit_code == 0, r.output
    words = json.loads(r.output)["real_words"]
    assert words["samples"] == 3 and words["tokens"] == 40 and words["total"] > 0
    assert 0 <= words["found"] <= words["total"]
    assert words["rate"] == pytest.approx(words["found"] / words["total"])
    known = set(re.findall(r"\w+", data.split_text(TINY_TEXT, 0.1)[0]))
    assert not known & set(words["missing"])
    table = run(["evaluate", "--save_dir", str(save), "--real_words", "3", "-n", "40"])
    assert "occur in the training text (3 samples of 40 tokens" in table.output
