"""A corpus as ids for training: loaded through the id cache, split, and batched.

The corpus files (``textfiles.corpus_files``) are read in chunks, never whole:
one pass counts the characters (the vocabulary), a second writes the ids in the
vocabulary's smallest dtype straight into the cache (``idcache``), which is then
memory-mapped. Memory stays bounded by the chunk size, whatever the size of the
corpus (see ``load_corpus``).

A stateful RNN carries its state from one batch to the next, so row ``j`` of
batch ``k + 1`` must continue the text exactly where row ``j`` of batch ``k``
stopped. The text is cut into ``batch_size`` contiguous streams and each batch
takes the next ``seq_length`` characters of every stream; nothing is shuffled
(``StreamBatches``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from kerasgen import idcache
from kerasgen.errors import DataError, ParameterError
from kerasgen.textfiles import (
    CHUNK_BYTES,
    ReadStats,
    check_unchanged,
    corpus_files,
    empty_message,
    read_corpus_text,
    read_pieces,
    stamp,
)
from kerasgen.vocab import TokenVocabulary, Vocabulary

# numpy turns index arrays into intp (8 bytes per element) for bincount and
# fancy indexing; working in blocks of this many keeps that copy at 8 MB.
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Corpus:
    """A corpus as a vocabulary and ids.

    ``ids`` (N,) in ``vocab.id_dtype``: memory-mapped read-only from the cache
    in ``cache_dir``, or an array in memory when no cache could be written
    (``cache_dir`` None). ``notes``: one-line remarks for the user (line ends
    converted, where the cache went).
    """

    vocab: Vocabulary
    ids: np.ndarray
    files: tuple[str, ...]
    cache_dir: str | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Reader:
    """The corpus files and how ``load_corpus`` reads them, the same in every pass."""

    files: list[str]
    stamps: list[tuple[int, int]]  # ``textfiles.stamp`` of each file before any pass
    encoding: str
    keep_cr: bool
    chunk_bytes: int
    progress: object

    def pieces(self, stage: str, stats: ReadStats | None = None, hashes=None):
        """The text, read as ``read_pieces`` reads it, reported as ``stage``."""
        return read_pieces(
            self.files,
            self.encoding,
            self.keep_cr,
            stats,
            self.chunk_bytes,
            hashes,
            self.progress,
            stage,
        )


def load_corpus(
    data_dir: str,
    encoding: str = "utf-8",
    keep_cr: bool = False,
    progress=None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Corpus:
    """Vocabulary and ids of the corpus in ``data_dir`` (``corpus_files``), cached.

    The cache (``kerasgen_cache.json`` + ``kerasgen_cache.npy``) records the
    name, size and sha256 of every file, the encoding and ``keep_cr``, and is
    rebuilt whenever any of them changes, and when the ids no longer match
    the CRC-32 it recorded (bytes damaged on disk). It is written beside the corpus; if
    that folder is not writable, under ``idcache.fallback_cache_dir``; if neither is,
    the ids stay in memory. ``notes`` on the result say which.

    Building it reads the files twice in chunks of ``chunk_bytes``: once to
    count the characters (the vocabulary, ``Vocabulary.from_counts``: the
    order of ``Vocabulary.from_text``) and hash the bytes, once to write the
    ids. Memory grows with the chunk size, not with the corpus.
    ``progress(done_bytes, total_bytes, stage)``, stage one of "hashing"
    (checking a cache), "counting", "encoding", is called after each chunk.
    """
    files = corpus_files(data_dir)
    reader = _Reader(files, [stamp(p) for p in files], encoding, keep_cr, chunk_bytes, progress)
    folders = idcache.cache_folders(data_dir)
    head = idcache.settings(encoding, keep_cr)
    sized = idcache.sized_files(files, reader.stamps)
    hashes = [hashlib.sha256() for _ in files]
    # Hash only when a cache could match: same settings, names and sizes.
    candidates = idcache.candidates(folders, head, sized)
    if candidates:
        idcache.hash_files(files, hashes, chunk_bytes, progress)
        cached = idcache.open_matching(candidates, idcache.listed_files(sized, hashes))
        if cached is not None:
            return _cached_corpus(data_dir, files, *cached)
    # Pass 1: count the characters, hashing the bytes if that was not done above.
    stats = ReadStats()
    counts = _counts(reader.pieces("counting", stats, None if candidates else hashes))
    if not counts.any():
        raise DataError(empty_message(data_dir, files))
    vocab = _vocabulary(counts)
    listed = idcache.listed_files(sized, hashes)  # every file is hashed by now
    meta = idcache.new_meta(head, listed, int(counts.sum()), stats, vocab)
    return _stored(data_dir, folders, meta, reader, vocab, stats.notes())


def _cached_corpus(data_dir, files, folder, vocab, ids, stats) -> Corpus:
    """The corpus read from the cache in ``folder``, with a note if it is not ``data_dir``."""
    where = () if folder == data_dir else (f"read the data cache from {folder}",)
    return Corpus(vocab, ids, tuple(files), folder, stats.notes() + where)


def _counts(pieces) -> np.ndarray:
    """How often each code point occurs in ``pieces`` (indexed by code point)."""
    counts = np.zeros(256, np.int64)
    for piece in pieces:
        counts = _count(piece, counts)
    return counts


def _vocabulary(counts: np.ndarray) -> Vocabulary:
    """The vocabulary of the characters ``counts`` (by code point) has seen."""
    return Vocabulary.from_counts({chr(c): int(counts[c]) for c in np.flatnonzero(counts)})


def _stored(data_dir, folders, meta, reader: _Reader, vocab, notes) -> Corpus:
    """Pass 2: the ids written to the first of ``folders`` that takes them, or kept in
    memory if none does; ``notes`` (what reading changed) plus where they went."""
    failures = []  # (folder, why the cache could not be written there)
    for folder in folders:
        try:
            ids = idcache.write_cache(folder, meta, vocab.id_dtype, _encoded(reader, meta, vocab))
        except OSError as e:  # read errors are DataError: this one is the cache's
            failures.append((folder, e.strerror or str(e)))
            continue
        if folder != data_dir:
            notes += (
                f"{data_dir} is not writable ({failures[0][1]}), so the data cache is in {folder}",
            )
        return Corpus(vocab, ids, tuple(reader.files), folder, notes)
    why = "; ".join(f"{folder}: {reason}" for folder, reason in failures)
    notes += (
        f"no data cache could be written ({why}); the ids are kept in memory and rebuilt "
        f"next time (set {idcache.CACHE_DIR_ENV} to a writable folder to keep one)",
    )
    return Corpus(vocab, _in_memory(reader, meta, vocab), tuple(reader.files), None, notes)


def _in_memory(reader: _Reader, meta: dict, vocab: Vocabulary) -> np.ndarray:
    """Pass 2 without a cache: the ids in an array."""
    ids, at = np.empty(meta["length"], vocab.id_dtype), 0
    for piece_ids in _encoded(reader, meta, vocab):
        ids[at : at + len(piece_ids)] = np.frombuffer(piece_ids, vocab.id_dtype)
        at += len(piece_ids)
    return ids


def _encoded(reader: _Reader, meta: dict, vocab: Vocabulary):
    """The ids of each piece; DataError if a file changed since pass 1."""
    encode, done, length = _encoder(vocab), 0, meta["length"]
    for piece in reader.pieces("encoding"):
        ids = encode(piece)
        done += len(ids)
        if done > length:
            break
        yield ids
    check_unchanged(reader.files, reader.stamps, done != length)


def _code_points(piece: str) -> np.ndarray:
    """The code points of ``piece``: uint8 when all are below 256, else uint32."""
    try:
        return np.frombuffer(piece.encode("latin-1"), np.uint8)  # a copy of 1 byte/char
    except UnicodeEncodeError:
        return np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), np.uint32)


def _count(piece: str, counts: np.ndarray) -> np.ndarray:
    """``counts`` (by code point) plus the characters of ``piece``; grows as needed."""
    codes = _code_points(piece)
    for start in range(0, len(codes), _BLOCK):
        block = np.bincount(codes[start : start + _BLOCK])
        if len(block) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(block) - len(counts), np.int64)])
        counts[: len(block)] += block
    return counts


def _encoder(vocab: Vocabulary):
    """A function from a piece of text to its ids (an array or bytes of ``vocab.id_dtype``)."""
    codes = [ord(c) for c in vocab.chars]
    lut = np.zeros(max(codes) + 1, vocab.id_dtype)  # code point -> id
    lut[codes] = np.arange(len(codes))
    # bytes.translate maps a byte per byte at memory speed: the ids of text
    # below U+0100 when ids fit a byte too.
    table = None
    if vocab.id_dtype == np.uint8:
        table = np.zeros(256, np.uint8)
        table[: min(len(lut), 256)] = lut[:256]
        table = table.tobytes()

    def encode(piece: str):
        try:
            latin = piece.encode("latin-1")
        except UnicodeEncodeError:
            codes = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), np.uint32)
        else:
            if table is not None:
                return latin.translate(table)
            codes = np.frombuffer(latin, np.uint8)
        if codes.max(initial=0) >= len(lut):
            raise DataError(
                "a corpus file changed while it was being read; run again once it stays the same"
            )
        ids = np.empty(len(codes), vocab.id_dtype)
        for start in range(0, len(codes), _BLOCK):
            ids[start : start + _BLOCK] = lut[codes[start : start + _BLOCK]]
        return ids

    return encode


# ---------------------------------------------------------------- splits


def split(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Train on the first ``1 - val_frac`` of the text, validate on the LAST part
    (nanoGPT's split, so held-out numbers are comparable across tools). With a
    folder of documents that is the last documents (by name), and part of the
    one where the cut falls. Views, not copies: a memory-mapped ``ids`` stays so."""
    if not 0.0 <= val_frac < 1.0:
        raise ParameterError("val_frac", f"must be in [0, 1), got {val_frac}")
    n_val = round(len(ids) * val_frac)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def split_text(text: str, val_frac: float) -> tuple[str, str]:
    """The same cut as ``split``, on the text itself: the last ``val_frac`` of its characters."""
    if not 0.0 <= val_frac < 1.0:
        raise ParameterError("val_frac", f"must be in [0, 1), got {val_frac}")
    n_val = round(len(text) * val_frac)
    return text[: len(text) - n_val], text[len(text) - n_val :]


class TokenSplits(NamedTuple):
    """What ``load_splits`` returns, at any level."""

    vocab: TokenVocabulary
    train_ids: np.ndarray
    val_ids: np.ndarray
    train_chars: int  # characters the training tokens stand for
    notes: tuple[str, ...] = ()


def load_token_splits(
    data_dir: str,
    encoding: str,
    val_frac: float,
    level: str,
    max_vocab: int | None = None,
    vocab_size: int | None = None,
    vocab=None,
    keep_cr: bool = False,
    progress=None,
) -> TokenSplits:
    """``(vocab, train_ids, val_ids, train_chars, notes)`` of the corpus at a level whose
    tokens span characters (``word``, ``bpe``).

    The text (read and normalised as ``load_corpus`` reads it) is cut by
    characters exactly where ``split`` cuts it at character level, so every
    level holds out the same characters; each part is then tokenized on its
    own. The vocabulary is built from the training part only (``max_vocab``:
    word level, ``vocab_size``: bpe level; held-out words a word vocabulary
    lacks become the unknown token), unless ``vocab`` is given (a saved run's).
    No cache: the vocabulary is learnt and the text encoded anew each time.
    """
    from kerasgen.vocab import build_vocabulary

    corpus = read_corpus_text(data_dir, encoding, keep_cr, progress)
    train_text, val_text = split_text(corpus.text, val_frac)
    if vocab is None:
        vocab = build_vocabulary(train_text, level, max_vocab, vocab_size)
    return TokenSplits(
        vocab, vocab.encode(train_text), vocab.encode(val_text), len(train_text), corpus.notes
    )


def load_splits(
    data_dir: str,
    encoding: str,
    val_frac: float,
    level: str = "char",
    max_vocab: int | None = None,
    vocab_size: int | None = None,
    vocab=None,
    keep_cr: bool = False,
    progress=None,
) -> TokenSplits:
    """The training and validation ids of the corpus at any level: the one way to them.

    Character level: through the id cache (``load_corpus``), the vocabulary the
    text's own unless ``vocab`` (a saved run's) is given, whose ids then encode it
    (ParameterError when the text has characters it lacks). Other levels:
    ``load_token_splits``. Every level holds out the same characters.
    """
    if level != "char":
        return load_token_splits(
            data_dir, encoding, val_frac, level, max_vocab, vocab_size, vocab, keep_cr, progress
        )
    corpus = load_corpus(data_dir, encoding, keep_cr=keep_cr, progress=progress)
    ids = corpus.ids
    if vocab is not None:
        missing = [c for c in corpus.vocab.chars if c not in vocab.index]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:20])
            raise ParameterError(
                "data_dir",
                f"{data_dir} has characters not in the vocabulary of the run being "
                f"continued ({shown}); train a new model on it instead",
            )
        ids = np.array([vocab.index[c] for c in corpus.vocab.chars], vocab.id_dtype)[ids]
    train_ids, val_ids = split(ids, val_frac)
    return TokenSplits(vocab or corpus.vocab, train_ids, val_ids, len(train_ids), corpus.notes)


# ---------------------------------------------------------------- batches


def num_batches(num_ids: int, batch_size: int, seq_length: int) -> int:
    """How many [batch_size, seq_length] batches ``num_ids`` ids make (targets need one more)."""
    return max(num_ids - 1, 0) // (batch_size * seq_length)


def _check_one_batch(num_ids: int, batch_size: int, seq_length: int, what: str) -> int:
    n = num_batches(num_ids, batch_size, seq_length)
    if n == 0:
        need = batch_size * seq_length + 1
        raise ValueError(
            f"the {what} has {num_ids} characters, too short for one batch of "
            f"batch_size {batch_size} x seq_length {seq_length} (needs {need}); "
            "use a smaller batch_size or seq_length, or more text"
        )
    return n


class StreamBatches:
    """The stream layout of ``ids``, one (B, T) batch at a time, without copying the text.

    Stream j is ``ids[j * L : (j + 1) * L]`` with ``L = len(self) * seq_length``;
    batch k holds columns ``k * seq_length : (k + 1) * seq_length`` of every
    stream, and its targets are the inputs shifted by one. The windows (one
    row of one batch) are numbered ``k * batch_size + j``; a stateless model
    may read them in any ``order`` (a permutation of ``range(self.windows)``).
    ``ids`` may be memory-mapped: each batch reads only its own ids.
    """

    def __init__(
        self, ids: np.ndarray, batch_size: int, seq_length: int, what: str = "training text"
    ):
        self.num_batches = _check_one_batch(len(ids), batch_size, seq_length, what)
        self.ids = ids
        self.batch_size, self.seq_length = batch_size, seq_length
        self.stream_length = self.num_batches * seq_length  # L
        self.windows = self.num_batches * batch_size
        self._columns = np.arange(seq_length + 1)  # a window and its last target

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, k: int, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of batch ``k``: int32 arrays of shape (B, T)."""
        if not 0 <= k < self.num_batches:
            raise IndexError(f"batch {k} of {self.num_batches}")
        b, t = self.batch_size, self.seq_length
        if order is None:
            rows, steps = np.arange(b), k
        else:
            windows = np.asarray(order[k * b : (k + 1) * b])
            rows, steps = windows % b, windows // b
        starts = rows * self.stream_length + steps * t  # (B,)
        window = np.asarray(self.ids[starts[:, None] + self._columns], np.int32)  # (B, T + 1)
        return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:])

    def dataset(self, start: int = 0, order: np.ndarray | None = None):
        """A tf.data pipeline of (x, y) int32 (B, T) batches in order from batch ``start``."""
        import tensorflow as tf

        if order is not None:
            order = np.asarray(order)
            if order.shape != (self.windows,):
                raise ParameterError(
                    "order",
                    f"must be a permutation of the {self.windows} windows, got shape {order.shape}",
                )
        shape = (self.batch_size, self.seq_length)

        def load(k):
            x, y = tf.numpy_function(
                lambda k: self.batch(int(k), order), [k], (tf.int32, tf.int32), stateful=False
            )
            return tf.ensure_shape(x, shape), tf.ensure_shape(y, shape)

        ds = tf.data.Dataset.range(start, self.num_batches)
        ds = ds.map(load, num_parallel_calls=LOADERS, deterministic=True)
        return ds.prefetch(PREFETCH).with_options(_no_autotune(tf))


LOADERS, PREFETCH = 2, 4  # batches read at once, and batches kept ready


def _no_autotune(tf):
    """tf.data options without autotuning. Its background thread sleeps between
    rounds, and dropping an iterator waits for it to wake, which stalled training
    at epoch ends; reading a batch is cheap, so fixed settings lose nothing."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def stream_batches(
    ids: np.ndarray, batch_size: int, seq_length: int, what: str = "training text"
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets as arrays of shape (num_batches, batch_size, seq_length).

    The whole layout of ``StreamBatches`` at once, copied twice: for small
    texts (tests, quick experiments); training uses ``StreamBatches``.
    """
    n = _check_one_batch(len(ids), batch_size, seq_length, what)
    used = n * batch_size * seq_length
    x = ids[:used].reshape(batch_size, n, seq_length).transpose(1, 0, 2)
    y = ids[1 : used + 1].reshape(batch_size, n, seq_length).transpose(1, 0, 2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def make_dataset(x: np.ndarray, y: np.ndarray, start: int = 0):
    """A tf.data pipeline over ``stream_batches`` arrays, in order, from batch ``start``.

    The ids stay in their compact dtype in memory and are cast per batch.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x[start:], y[start:]))
    ds = ds.map(
        lambda a, b: (tf.cast(a, tf.int32), tf.cast(b, tf.int32)),
        num_parallel_calls=LOADERS,
        deterministic=True,
    )
    return ds.prefetch(PREFETCH).with_options(_no_autotune(tf))
