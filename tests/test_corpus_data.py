"""The data layer for big corpora: chunked preprocessing, the memory-mapped id
cache and where it goes, folders of documents, line ends, and stream batches."""

import json
import os
import tempfile

import numpy as np
import pytest
from runner import run
from tiny import TINY_TEXT, TINY_TRAIN

from kerasgen import atomic, data, idcache, textfiles
from kerasgen.errors import DataError
from kerasgen.vocab import Vocabulary

# Characters of 1, 2, 3 and 4 UTF-8 bytes, so small chunks split all of them.
MIXED = "abc é 日本語 🎉\nxyz ß — ok\n" * 5


def write_input(folder, content: bytes):
    folder.mkdir(exist_ok=True)
    (folder / "input.txt").write_bytes(content)
    return str(folder)


def text_of(corpus) -> str:
    return corpus.vocab.decode(corpus.ids)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64, textfiles.CHUNK_BYTES])
def test_chunked_preprocessing_equals_the_in_memory_result(tmp_path, chunk_bytes):
    folder = write_input(tmp_path / "d", MIXED.encode("utf-8"))
    corpus = data.load_corpus(folder, chunk_bytes=chunk_bytes)
    expected = Vocabulary.from_text(MIXED)
    assert corpus.vocab == expected  # same characters, counts and order
    np.testing.assert_array_equal(corpus.ids, expected.encode(MIXED))
    assert corpus.notes == ()


def test_more_than_256_characters_take_uint16_ids(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 2 + "\n"
    folder = write_input(tmp_path / "d", text.encode("utf-8"))
    corpus = data.load_corpus(folder, chunk_bytes=5)
    assert len(corpus.vocab) == 301 and corpus.ids.dtype == np.uint16
    np.testing.assert_array_equal(corpus.ids, Vocabulary.from_text(text).encode(text))


def test_ids_are_memory_mapped_in_the_smallest_dtype(data_dir):
    for _ in range(2):  # built, then read from the cache
        corpus = data.load_corpus(str(data_dir))
        assert isinstance(corpus.ids, np.memmap) and not corpus.ids.flags.writeable
        assert corpus.ids.dtype == np.uint8 and corpus.cache_dir == str(data_dir)
    assert np.load(data_dir / idcache.CACHE_IDS).dtype == np.uint8
    assert text_of(corpus) == TINY_TEXT
    assert Vocabulary.from_text("abc").id_dtype == np.uint8
    assert Vocabulary.from_text("".join(map(chr, range(300)))).id_dtype == np.uint16


def test_progress_reports_every_stage_up_to_the_total(tmp_path):
    folder = write_input(tmp_path / "d", MIXED.encode("utf-8"))
    calls = []
    data.load_corpus(folder, chunk_bytes=16, progress=lambda *a: calls.append(a))
    size = len(MIXED.encode("utf-8"))
    assert [c for c in calls if c[0] == size] == [
        (size, size, "counting"),
        (size, size, "encoding"),
    ]
    calls.clear()
    data.load_corpus(folder, chunk_bytes=16, progress=lambda *a: calls.append(a))
    assert calls[-1] == (size, size, "hashing") and {c[2] for c in calls} == {"hashing"}


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 7, 19, 20, 21, 1000])
def test_undecodable_byte_offset_is_absolute_across_chunks(tmp_path, chunk_bytes):
    # 0xe6 0x97 starts a 3-byte character that "z" does not finish: byte 20.
    folder = write_input(tmp_path / "d", ("é" * 10).encode() + b"\xe6\x97z tail")
    with pytest.raises(DataError, match=r"input\.txt: byte 0xe6 at offset 20 is not valid"):
        data.load_corpus(folder, chunk_bytes=chunk_bytes)
    write_input(tmp_path / "d", b"x" * 37 + b"\xff" + b"y" * 40)
    with pytest.raises(DataError, match=r"byte 0xff at offset 37 "):
        data.load_corpus(folder, chunk_bytes=chunk_bytes)
    write_input(tmp_path / "d", b"abc\xe6\x97")  # cut off at the end of the file
    with pytest.raises(DataError, match=r"byte 0xe6 at offset 3 "):
        data.load_corpus(folder, chunk_bytes=chunk_bytes)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 1000])
def test_bom_dropped_and_crlf_read_as_lf_with_one_note(tmp_path, chunk_bytes):
    raw = b"\xef\xbb\xbf" + b"one\r\ntwo\rthree\r\n\r\nfour\r"
    folder = write_input(tmp_path / "d", raw)
    corpus = data.load_corpus(folder, chunk_bytes=chunk_bytes)
    assert text_of(corpus) == "one\ntwo\nthree\n\nfour\n"
    assert "\r" not in corpus.vocab.chars and "\ufeff" not in corpus.vocab.chars
    assert corpus.notes == (
        "dropped the byte-order mark (U+FEFF) at the start of 1 file",
        r"read 3 CRLF and 2 lone CR line ends as LF (--keep_cr keeps \r)",
    )
    assert data.load_corpus(folder).notes == corpus.notes  # the cache remembers them
    kept = data.load_corpus(folder, keep_cr=True, chunk_bytes=chunk_bytes)  # a new cache
    assert text_of(kept) == "one\r\ntwo\rthree\r\n\r\nfour\r"
    assert kept.notes == corpus.notes[:1]


def test_word_level_reads_line_ends_the_same_way(tmp_path):
    folder = write_input(tmp_path / "d", b"\xef\xbb\xbf" + TINY_TEXT.replace("\n", "\r\n").encode())
    vocab, _train_ids, _val_ids, train_chars, notes = data.load_token_splits(
        folder, "utf-8", 0.1, "word", 50
    )
    assert not any("\r" in t or "\ufeff" in t for t in vocab.tokens)
    train_text, _ = data.split_text(TINY_TEXT, 0.1)
    assert train_chars == len(train_text) and len(notes) == 2
    assert textfiles.read_text(os.path.join(folder, "input.txt")) == TINY_TEXT
    assert textfiles.read_text(
        os.path.join(folder, "input.txt"), keep_cr=True
    ) == TINY_TEXT.replace("\n", "\r\n")


# ---------------------------------------------------------------- where the cache goes


def refuse_writes(folder, monkeypatch):
    """Make ``folder`` read-only: chmod 0555, or, where that does not stop this user
    (root), make creating files in it fail as a read-only folder does."""
    os.chmod(folder, 0o555)
    if not os.access(folder, os.W_OK):
        return
    real_mkstemp, real_makedirs = tempfile.mkstemp, os.makedirs
    refused = os.path.realpath(folder)

    def check(path):
        path = os.path.realpath(path)
        if path == refused or path.startswith(refused + os.sep):
            raise PermissionError(13, "Permission denied", path)

    def mkstemp(*args, dir=None, **kwargs):
        check(dir or tempfile.gettempdir())
        return real_mkstemp(*args, dir=dir, **kwargs)

    def makedirs(path, *args, **kwargs):
        if not os.path.isdir(path):
            check(path)
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "makedirs", makedirs)


@pytest.fixture
def read_only(monkeypatch):
    folders = []

    def make(folder):
        folders.append(folder)
        refuse_writes(folder, monkeypatch)

    yield make
    for folder in folders:
        os.chmod(folder, 0o755)


def test_read_only_folder_chmod(data_dir, tmp_path, monkeypatch):
    """The real thing, where chmod stops this user (not root)."""
    monkeypatch.setenv(idcache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    os.chmod(data_dir, 0o555)
    try:
        if os.access(data_dir, os.W_OK):
            pytest.skip("this user can write into a 0555 folder (root)")
        corpus = data.load_corpus(str(data_dir))
    finally:
        os.chmod(data_dir, 0o755)
    assert corpus.cache_dir.startswith(str(tmp_path / "cache"))
    assert "Permission denied" in corpus.notes[0] and text_of(corpus) == TINY_TEXT


def test_read_only_folder_caches_elsewhere_and_says_where(
    data_dir, tmp_path, monkeypatch, read_only
):
    monkeypatch.setenv(idcache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    read_only(data_dir)
    corpus = data.load_corpus(str(data_dir))
    expected = idcache.fallback_cache_dir(str(data_dir))
    assert corpus.cache_dir == expected and os.path.dirname(expected) == str(tmp_path / "cache")
    assert corpus.notes == (
        f"{data_dir} is not writable (Permission denied), so the data cache is in {expected}",
    )
    assert isinstance(corpus.ids, np.memmap) and text_of(corpus) == TINY_TEXT
    assert not (data_dir / idcache.CACHE_JSON).exists()
    again = data.load_corpus(str(data_dir))
    assert again.notes == (f"read the data cache from {expected}",)
    np.testing.assert_array_equal(again.ids, corpus.ids)


def test_default_fallback_is_under_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(idcache.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    a, b = idcache.fallback_cache_dir("x/one"), idcache.fallback_cache_dir("x/two")
    assert os.path.dirname(a) == str(tmp_path / "home" / ".cache" / "kerasgen") and a != b
    assert idcache.fallback_cache_dir(os.path.abspath("x/one")) == a  # by absolute path


def test_no_writable_cache_anywhere_keeps_ids_in_memory(data_dir, tmp_path, monkeypatch, read_only):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv(idcache.CACHE_DIR_ENV, str(cache))
    read_only(data_dir)
    read_only(cache)
    corpus = data.load_corpus(str(data_dir))
    assert corpus.cache_dir is None and not isinstance(corpus.ids, np.memmap)
    assert text_of(corpus) == TINY_TEXT and corpus.ids.dtype == np.uint8
    (note,) = corpus.notes
    assert note.startswith("no data cache could be written") and str(cache) in note
    assert idcache.CACHE_DIR_ENV in note and "\n" not in note


# ---------------------------------------------------------------- folders of documents


def test_folder_of_txt_files_is_a_corpus_of_documents(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "b.txt").write_text("beta\nline two\n\n\n")
    (folder / "a.txt").write_text("\n\nalpha")  # no final newline
    (folder / "c.txt").write_text("\n")  # nothing but a newline: skipped
    (folder / "d.txt").write_bytes(b"\xef\xbb\xbfdelta\r\n")
    (folder / "notes.md").write_text("not a document")
    (folder / ".hidden.txt").write_text("editor backup")
    (folder / "sub").mkdir()
    (folder / "sub" / "e.txt").write_text("not read: no recursion")
    corpus = data.load_corpus(str(folder), chunk_bytes=3)
    assert text_of(corpus) == "alpha\n\nbeta\nline two\n\ndelta\n"
    assert [os.path.basename(f) for f in corpus.files] == ["a.txt", "b.txt", "c.txt", "d.txt"]
    assert textfiles.read_corpus_text(str(folder)).text == text_of(corpus)
    assert len(corpus.notes) == 2  # the BOM and the CRLF of d.txt
    # The validation split is the last characters: the end of the last documents.
    _, val = data.split(corpus.ids, 0.25)
    assert corpus.vocab.decode(val) == "\ndelta\n"
    assert textfiles.describe_files(corpus.files) == f"the 4 *.txt files in {folder}"

    # The cache covers every file: a changed, added or removed one rebuilds it.
    listed = json.loads((folder / idcache.CACHE_JSON).read_text())["files"]
    assert [f[0] for f in listed] == ["a.txt", "b.txt", "c.txt", "d.txt"]
    (folder / "a.txt").write_text("ALPHA")
    assert text_of(data.load_corpus(str(folder))).startswith("ALPHA\n\nbeta")
    (folder / "f.txt").write_text("phi")
    assert text_of(data.load_corpus(str(folder))).endswith("delta\n\nphi\n")
    (folder / "b.txt").unlink()
    assert text_of(data.load_corpus(str(folder))) == "ALPHA\n\ndelta\n\nphi\n"
    # input.txt, when there is one, is the corpus on its own, as it is.
    (folder / "input.txt").write_text("only this")
    assert text_of(data.load_corpus(str(folder))) == "only this"


def test_folder_without_text_says_what_to_put_there(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(
        FileNotFoundError,
        match=r"input\.txt not found, nor any other \*\.txt "
        r"file in .*one \*\.txt file per document",
    ):
        data.load_corpus(str(tmp_path))
    (tmp_path / "a.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"the \*\.txt files in .* are empty"):
        data.load_corpus(str(tmp_path))


# ---------------------------------------------------------------- stream batches


@pytest.mark.parametrize("size,batch_size,seq_length", [(1000, 3, 7), (201, 4, 25), (57, 1, 8)])
def test_stream_batches_object_matches_the_array_layout(size, batch_size, seq_length, tmp_path):
    ids = np.random.default_rng(0).integers(0, 200, size).astype(np.uint8)
    x, y = data.stream_batches(ids, batch_size, seq_length)
    np.save(tmp_path / "ids.npy", ids)
    mapped = np.load(tmp_path / "ids.npy", mmap_mode="r")
    batches = data.StreamBatches(mapped, batch_size, seq_length)
    assert len(batches) == len(x) and batches.windows == len(x) * batch_size
    for k in range(len(x)):
        bx, by = batches.batch(k)
        assert bx.dtype == by.dtype == np.int32 and bx.shape == (batch_size, seq_length)
        np.testing.assert_array_equal(bx, x[k])
        np.testing.assert_array_equal(by, y[k])
    got = [(a.numpy(), b.numpy()) for a, b in batches.dataset(start=1)]
    assert len(got) == len(x) - 1
    np.testing.assert_array_equal(np.stack([a for a, _ in got]), x[1:])
    np.testing.assert_array_equal(np.stack([b for _, b in got]), y[1:])
    # A window order: today's shuffle of (row, step) windows across the whole epoch.
    order = np.random.default_rng(1).permutation(batches.windows)
    shuffled = x.reshape(-1, seq_length)[order].reshape(x.shape)
    got = [a.numpy() for a, _ in batches.dataset(order=order)]
    np.testing.assert_array_equal(np.stack(got), shuffled)
    np.testing.assert_array_equal(
        batches.batch(0, order)[1], y.reshape(-1, seq_length)[order][:batch_size]
    )


def test_stream_batches_object_refuses_too_short_text_as_before():
    with pytest.raises(ValueError) as old:
        data.stream_batches(np.arange(50), 10, 10, what="validation text")
    with pytest.raises(ValueError) as new:
        data.StreamBatches(np.arange(50), 10, 10, what="validation text")
    assert str(new.value) == str(old.value) and "batch_size 10 x seq_length 10" in str(new.value)
    with pytest.raises(ValueError, match="permutation"):
        data.StreamBatches(np.arange(500), 2, 10).dataset(order=np.arange(3))


# ---------------------------------------------------------------- the CLI


def train_cli(data_dir, tmp_path, *extra):

    save = tmp_path / "save"
    r = run(
        [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(save),
            "--log_dir",
            str(tmp_path / "logs"),
            "--num_epochs",
            "1",
            *TINY_TRAIN,
            *extra,
        ],
    )
    return r, save


def test_cli_trains_on_a_read_only_folder(data_dir, tmp_path, monkeypatch, read_only):
    monkeypatch.setenv(idcache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    read_only(data_dir)
    r, _ = train_cli(data_dir, tmp_path)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    notes = [line for line in r.output.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {data_dir} is not writable (Permission denied), so the data "
        f"cache is in {idcache.fallback_cache_dir(str(data_dir))}"
    ]


@pytest.mark.slow  # trains twice through the CLI (about 6 s)
def test_cli_reads_crlf_as_lf_unless_keep_cr(tmp_path):
    folder = tmp_path / "crlf"
    write_input(folder, TINY_TEXT.replace("\n", "\r\n").encode())
    r, save = train_cli(folder, tmp_path)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    notes = [line for line in r.output.splitlines() if line.startswith("note: ")]
    assert notes == [
        rf"note: read {TINY_TEXT.count(chr(10))} CRLF line ends as LF "
        r"(--keep_cr keeps \r)"
    ]
    vocab = json.loads((save / "vocab.json").read_text(encoding="utf-8"))
    assert "\r" not in vocab["chars"]
    config = json.loads((save / "config.json").read_text())
    assert config["train"]["keep_cr"] is False
    r, save = train_cli(folder, tmp_path, "--keep_cr", "--overwrite")
    assert r.exit_code == 0, r.output
    assert "note: " not in r.output
    assert "\r" in json.loads((save / "vocab.json").read_text(encoding="utf-8"))["chars"]


def test_batch_pipelines_do_not_autotune():
    """tf.data's autotuner sleeps between rounds (up to a minute), and dropping an iterator
    waits for it: training stalled at epoch ends. The pipelines switch it off."""
    ids = np.arange(2000) % 50
    pipelines = [
        data.StreamBatches(ids, 4, 10).dataset(),
        data.make_dataset(*data.stream_batches(ids, 4, 10)),
    ]
    for ds in pipelines:
        assert ds.options().autotune.enabled is False
        assert len(list(ds)) == len(data.stream_batches(ids, 4, 10)[0])
