"""Text -> ids -> tf.data batches laid out as parallel contiguous streams.

A stateful RNN carries its state from one batch to the next, so row ``j`` of
batch ``k + 1`` must continue the text exactly where row ``j`` of batch ``k``
stopped. The text is cut into ``batch_size`` contiguous streams and each batch
takes the next ``seq_length`` characters of every stream; nothing is shuffled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from kerasgen import atomic
from kerasgen.errors import DataError
from kerasgen.vocab import Vocabulary

INPUT_NAME = "input.txt"
CACHE_JSON = "kerasgen_cache.json"  # vocabulary + fingerprint of input.txt
CACHE_IDS = "kerasgen_cache.npy"  # the text as ids
CACHE_FORMAT = 1

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_tiny_shakespeare(data_dir: str) -> str:
    """Fetch tiny Shakespeare into ``data_dir/input.txt`` and check its sha256.

    The download goes to a temporary folder first, so a failed or wrong
    download never leaves a file that looks like the corpus.
    """
    import keras  # keras.utils.get_file; imported here so data prep stays light

    target = os.path.join(data_dir, INPUT_NAME)
    tmp_dir = tempfile.mkdtemp(prefix="kerasgen-download-")
    try:
        try:
            fetched = keras.utils.get_file(
                fname=INPUT_NAME, origin=TINY_SHAKESPEARE_URL, cache_dir=tmp_dir,
                cache_subdir="", file_hash=TINY_SHAKESPEARE_SHA256, hash_algorithm="sha256")
        except Exception as e:  # get_file raises bare Exception for network failures
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FileNotFoundError(
                f"{target} is missing and could not be downloaded ({reason}); "
                f"download {TINY_SHAKESPEARE_URL} and save it as {target}") from None
        os.makedirs(data_dir, exist_ok=True)
        with atomic.atomic_path(target) as tmp:
            shutil.copyfile(fetched, tmp)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def read_text(path: str, encoding: str = "utf-8") -> str:
    """Read a whole text file, refusing (never dropping) bytes that do not decode."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}; pass a Python codec name "
                         "such as utf-8 or latin-1") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: byte 0x{raw[e.start]:02x} at offset {e.start} is not valid {encoding}; "
            "convert the file to UTF-8 or pass the right --encoding (e.g. latin-1)") from None


def input_path(data_dir: str) -> str:
    """``data_dir/input.txt``, downloading tiny Shakespeare if that is what is missing."""
    path = os.path.join(data_dir, INPUT_NAME)
    if not os.path.isdir(data_dir):
        if os.path.basename(os.path.normpath(data_dir)) != "tinyshakespeare":
            raise FileNotFoundError(f"data directory {data_dir} does not exist; "
                                    f"create it and put your text in {path}")
    if not os.path.isfile(path):
        if os.path.basename(os.path.normpath(data_dir)) == "tinyshakespeare":
            download_tiny_shakespeare(data_dir)
        else:
            raise FileNotFoundError(f"{path} not found; put your training text there "
                                    "(one plain-text file named input.txt)")
    return path


def load_corpus(data_dir: str, encoding: str = "utf-8") -> tuple[Vocabulary, np.ndarray]:
    """Vocabulary and id array of ``data_dir/input.txt``, cached beside it.

    The cache (JSON + .npy) records the sha256 of the input and encoding it
    was built from and is rebuilt whenever either changes. A missing tiny
    Shakespeare corpus is downloaded.
    """
    path = input_path(data_dir)
    fingerprint = {"format": CACHE_FORMAT, "sha256": _sha256(path), "encoding": encoding}
    cache_json = os.path.join(data_dir, CACHE_JSON)
    cache_ids = os.path.join(data_dir, CACHE_IDS)
    cached = _read_cache(cache_json, cache_ids, fingerprint)
    if cached is not None:
        return cached

    text = read_text(path, encoding)
    if not text:
        raise DataError(f"{path} is empty; put some text in it")
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    # Ids first, then the JSON that vouches for them: a crash in between leaves
    # a JSON that does not match and the cache is simply rebuilt.
    with atomic.atomic_path(cache_ids, suffix=".npy") as tmp:
        np.save(tmp, ids, allow_pickle=False)
    atomic.write_text(cache_json, json.dumps(
        {**fingerprint, "length": int(ids.size), "vocab": json.loads(vocab.to_json())},
        ensure_ascii=False))
    return vocab, ids


def _read_cache(cache_json: str, cache_ids: str, fingerprint: dict):
    try:
        with open(cache_json, encoding="utf-8") as f:
            meta = json.load(f)
        if any(meta.get(k) != v for k, v in fingerprint.items()):
            return None
        vocab = Vocabulary.from_json(json.dumps(meta["vocab"]))
        ids = np.load(cache_ids, allow_pickle=False)
        if ids.ndim != 1 or ids.size != meta["length"]:
            return None
        return vocab, ids
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no cache, or a damaged one: rebuild it


def split(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Train on the first ``1 - val_frac`` of the text, validate on the LAST part
    (nanoGPT's split, so held-out numbers are comparable across tools)."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"--val_frac must be in [0, 1), got {val_frac}")
    n_val = int(round(len(ids) * val_frac))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


def split_text(text: str, val_frac: float) -> tuple[str, str]:
    """The same cut as ``split``, on the text itself: the last ``val_frac`` of its characters."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"--val_frac must be in [0, 1), got {val_frac}")
    n_val = int(round(len(text) * val_frac))
    return text[: len(text) - n_val], text[len(text) - n_val:]


def load_token_splits(data_dir: str, encoding: str, val_frac: float, level: str,
                      max_vocab: int | None = None, vocab_size: int | None = None, vocab=None):
    """``(vocab, train_ids, val_ids, train_chars)`` of ``data_dir/input.txt`` at a
    level whose tokens span characters (``word``, ``bpe``).

    The text is cut by characters exactly where ``split`` cuts it at character
    level, so every level holds out the same characters; each part is then
    tokenized on its own. The vocabulary is built from the training part only
    (``max_vocab``: word level, ``vocab_size``: bpe level; held-out words a word
    vocabulary lacks become the unknown token), unless ``vocab`` is given (a
    saved run's). No cache: learning and encoding take a second or two per MB.
    """
    from kerasgen.vocab import build_vocabulary

    path = input_path(data_dir)
    text = read_text(path, encoding)
    if not text:
        raise DataError(f"{path} is empty; put some text in it")
    train_text, val_text = split_text(text, val_frac)
    if vocab is None:
        vocab = build_vocabulary(train_text, level, max_vocab, vocab_size)
    return vocab, vocab.encode(train_text), vocab.encode(val_text), len(train_text)


def num_batches(num_ids: int, batch_size: int, seq_length: int) -> int:
    """How many [batch_size, seq_length] batches ``num_ids`` ids make (targets need one more)."""
    return max(num_ids - 1, 0) // (batch_size * seq_length)


def stream_batches(ids: np.ndarray, batch_size: int, seq_length: int,
                   what: str = "training text") -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets as arrays of shape (num_batches, batch_size, seq_length).

    Row j of the text (stream j) is ``ids[j * L : (j + 1) * L]`` with
    ``L = num_batches * seq_length``; batch k holds columns
    ``k * seq_length : (k + 1) * seq_length`` of every stream. Targets are the
    inputs shifted by one character.
    """
    n = num_batches(len(ids), batch_size, seq_length)
    if n == 0:
        need = batch_size * seq_length + 1
        raise ValueError(
            f"the {what} has {len(ids)} characters, too short for one batch of "
            f"--batch_size {batch_size} x --seq_length {seq_length} (needs {need}); "
            "use a smaller --batch_size or --seq_length, or more text")
    used = n * batch_size * seq_length
    x = ids[:used].reshape(batch_size, n, seq_length).transpose(1, 0, 2)
    y = ids[1:used + 1].reshape(batch_size, n, seq_length).transpose(1, 0, 2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def make_dataset(x: np.ndarray, y: np.ndarray, start: int = 0):
    """A tf.data pipeline over precomputed stream batches, in order, from batch ``start``.

    The ids stay in their compact dtype in memory and are cast per batch.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x[start:], y[start:]))
    ds = ds.map(lambda a, b: (tf.cast(a, tf.int32), tf.cast(b, tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
