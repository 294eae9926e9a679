"""Text -> ids -> tf.data batches laid out as parallel contiguous streams.

A corpus is ``data_dir/input.txt`` or, when there is no ``input.txt``, every
``*.txt`` file in ``data_dir`` (see ``corpus_files``). It is read in chunks
of bytes, never whole: one pass counts the characters (the vocabulary), a
second writes the ids in the vocabulary's smallest dtype straight into a
``.npy`` cache, which is then memory-mapped. Memory stays bounded by the
chunk size, whatever the size of the corpus (see ``load_corpus``).

A stateful RNN carries its state from one batch to the next, so row ``j`` of
batch ``k + 1`` must continue the text exactly where row ``j`` of batch ``k``
stopped. The text is cut into ``batch_size`` contiguous streams and each batch
takes the next ``seq_length`` characters of every stream; nothing is shuffled
(``StreamBatches``).
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from kerasgen import atomic
from kerasgen.errors import DataError
from kerasgen.vocab import Vocabulary

INPUT_NAME = "input.txt"
DOCUMENT_SUFFIX = ".txt"  # a folder without input.txt: every such file is one document
CACHE_JSON = "kerasgen_cache.json"  # vocabulary + fingerprint of the corpus files
CACHE_IDS = "kerasgen_cache.npy"  # the text as ids
# 2: several files, keep_cr, ids in the smallest dtype (uint8 up to 256); 3: the CRC-32 of
# the ids, checked whenever the cache is opened
CACHE_FORMAT = 3
CACHE_DIR_ENV = "KERASGEN_CACHE_DIR"  # where caches go when the data folder is read-only
CHUNK_BYTES = 16 << 20  # bytes read at once; bounds the memory preprocessing needs
# numpy turns index arrays into intp (8 bytes per element) for bincount and
# fancy indexing; working in blocks of this many keeps that copy at 8 MB.
_BLOCK = 1 << 20

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


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
                fname=INPUT_NAME,
                origin=TINY_SHAKESPEARE_URL,
                cache_dir=tmp_dir,
                cache_subdir="",
                file_hash=TINY_SHAKESPEARE_SHA256,
                hash_algorithm="sha256",
            )
        except Exception as e:  # get_file raises bare Exception for network failures
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FileNotFoundError(
                f"{target} is missing and could not be downloaded ({reason}); "
                f"download {TINY_SHAKESPEARE_URL} and save it as {target}"
            ) from None
        os.makedirs(data_dir, exist_ok=True)
        with atomic.atomic_path(target) as tmp:
            shutil.copyfile(fetched, tmp)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


# ---------------------------------------------------------------- which files


def corpus_files(data_dir: str) -> list[str]:
    """The files of the corpus in ``data_dir``, in reading order.

    ``data_dir/input.txt`` alone when it exists (its text is used as it is).
    Otherwise every ``*.txt`` file directly in ``data_dir`` (not in
    subfolders; hidden files skipped), sorted by name (code-point order), each
    one document; ``read_pieces`` says how documents are joined. A missing
    ``data/.../tinyshakespeare`` corpus is downloaded; for a missing
    ``.../python`` folder the error says how to build one.
    """
    path = os.path.join(data_dir, INPUT_NAME)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(data_dir):
        names = sorted(
            name
            for name in os.listdir(data_dir)
            if name.endswith(DOCUMENT_SUFFIX)
            and not name.startswith(".")
            and os.path.isfile(os.path.join(data_dir, name))
        )
        if names:
            return [os.path.join(data_dir, name) for name in names]
    if os.path.basename(os.path.normpath(data_dir)) == "tinyshakespeare":
        return [download_tiny_shakespeare(data_dir)]
    if not os.path.isdir(data_dir):
        if os.path.basename(os.path.normpath(data_dir)) == "python":
            raise FileNotFoundError(
                f"data directory {data_dir} does not exist; build a Python "
                f"corpus there with: kerasgen corpus python --out {path}"
            )
        raise FileNotFoundError(
            f"data directory {data_dir} does not exist; create it and put your text in {path}"
        )
    raise FileNotFoundError(
        f"{path} not found, nor any other *.txt file in {data_dir}; put "
        f"your training text there: one file named {INPUT_NAME}, or one "
        "*.txt file per document"
    )


def _is_documents(files: list[str]) -> bool:
    """True for a folder of *.txt documents, False for one input.txt."""
    return not (len(files) == 1 and os.path.basename(files[0]) == INPUT_NAME)


def describe_files(files) -> str:
    """``data/x/input.txt``, or ``the 12 *.txt files in data/x``: the corpus, in words."""
    files = list(files)
    if not _is_documents(files):
        return files[0]
    count = f"{len(files)} *.txt files" if len(files) > 1 else "*.txt file"
    return f"the {count} in {os.path.dirname(files[0]) or os.curdir}"


# ---------------------------------------------------------------- reading text


@dataclass
class ReadStats:
    """What normalising the text changed, counted while reading."""

    crlf: int = 0  # "\r\n" read as "\n"
    lone_cr: int = 0  # "\r" not followed by "\n", read as "\n"
    boms: int = 0  # files whose leading U+FEFF was dropped

    def notes(self) -> tuple[str, ...]:
        """One line per change, for the user (the CLI prints them)."""
        notes = []
        if self.boms:
            files = "file" if self.boms == 1 else "files"
            notes.append(
                f"dropped the byte-order mark (U+FEFF) at the start of {self.boms:,} {files}"
            )
        ends = [
            f"{n:,} {kind}" for n, kind in ((self.crlf, "CRLF"), (self.lone_cr, "lone CR")) if n
        ]
        if ends:
            notes.append(f"read {' and '.join(ends)} line ends as LF (--keep_cr keeps \\r)")
        return tuple(notes)


def _decoder(encoding: str):
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        info = None
    # bytes-to-bytes codecs (base64, zlib ...) are not text encodings
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise ValueError(
            f"unknown encoding {encoding!r}; pass a Python codec name such as utf-8 or latin-1"
        )
    return info.incrementaldecoder(errors="strict")


def _decode(decoder, raw: bytes, final: bool, offset: int, path: str, encoding: str) -> str:
    """Decode the next chunk; ``offset``: where ``raw`` starts in the file."""
    pending = decoder.getstate()[0]  # bytes of a character split by the previous chunk
    pending = len(pending) if isinstance(pending, (bytes, bytearray)) else 0
    try:
        return decoder.decode(raw, final)
    except UnicodeDecodeError as e:
        # e.start counts from the pending bytes, which the decoder put before raw.
        at = offset - pending + e.start
        raise DataError(
            f"{path}: byte 0x{e.object[e.start]:02x} at offset {at} is not valid {encoding}; "
            "convert the file to UTF-8 or pass the right --encoding (e.g. latin-1)"
        ) from None


def read_pieces(
    files: list[str],
    encoding: str = "utf-8",
    keep_cr: bool = False,
    stats: ReadStats | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    hashes=None,
    progress=None,
    stage: str = "reading",
):
    """Yield the corpus text as strings of at most about ``chunk_bytes`` characters.

    Strict decoding: a byte that does not decode raises DataError naming the
    file and the byte's offset in it. Each file's leading byte-order mark
    (U+FEFF) is dropped, and unless ``keep_cr``, CRLF and lone CR line ends
    are read as LF; ``stats`` counts both.

    A folder of documents (``corpus_files`` gave *.txt files) is joined so
    that one blank line separates two documents: the newlines at the start
    and end of each are cut, it ends in exactly one newline, and an empty line
    follows it unless it is the last; files left empty are skipped. One
    ``input.txt`` is used exactly as it is.

    ``hashes``: one ``hashlib`` object per file, updated with its raw bytes.
    ``progress(done_bytes, total_bytes, stage)`` is called after each chunk.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    stats = ReadStats() if stats is None else stats
    documents = _is_documents(files)
    total = sum(os.path.getsize(p) for p in files) if progress is not None else 0
    done = 0

    def read(nbytes):
        nonlocal done
        done += nbytes
        if progress is not None:
            progress(done, total, stage)

    joined = False  # a document has been written
    for i, path in enumerate(files):
        pieces = _decoded(
            path, encoding, chunk_bytes, stats, None if hashes is None else hashes[i], read
        )
        if not keep_cr:
            pieces = _lf_line_ends(pieces, stats)
        if documents:
            pieces = _document(pieces, after_another=joined)
        for text in pieces:
            joined = True
            yield text


def _decoded(path: str, encoding: str, chunk_bytes: int, stats: ReadStats, hasher, read):
    """The text of one file in pieces, its leading byte-order mark dropped.
    ``read(nbytes)`` is told of each chunk, ``hasher`` is fed it."""
    decoder = _decoder(encoding)
    offset = 0
    at_start = True  # no character decoded yet
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    with f:
        while True:
            try:
                raw = f.read(chunk_bytes)
            except OSError as e:
                raise DataError(
                    f"{path}: reading failed at offset {offset} ({e.strerror})"
                ) from None
            if hasher is not None:
                hasher.update(raw)
            text = _decode(decoder, raw, not raw, offset, path, encoding)
            offset += len(raw)
            if at_start and text:
                at_start = False
                if text[0] == "\ufeff":
                    text = text[1:]
                    stats.boms += 1
            if text:
                yield text
            if not raw:
                return
            read(len(raw))


def _lf_line_ends(pieces, stats: ReadStats):
    """``pieces`` with CRLF and lone CR read as LF. A CR that ends a piece waits
    for the next one: only then is it known whether an LF follows."""
    held = ""
    for text in pieces:
        text = held + text
        held = "\r" if text.endswith("\r") else ""
        text = text[:-1] if held else text
        if "\r" in text:
            crlf = text.count("\r\n")
            text = text.replace("\r\n", "\n") if crlf else text
            lone = text.count("\r")
            text = text.replace("\r", "\n") if lone else text
            stats.crlf += crlf
            stats.lone_cr += lone
        if text:
            yield text
    if held:
        stats.lone_cr += 1
        yield "\n"


def _document(pieces, after_another: bool):
    """One document's pieces with the newlines at its start and end cut, ending in
    one newline, after a blank line if ``after_another``; nothing if it is empty.
    Newlines that end a piece wait: only the next piece shows whether they end the
    document."""
    started, held = False, 0
    for text in pieces:
        if not started:
            text = text.lstrip("\n")
        body = text.rstrip("\n")
        if not body:
            held += len(text)
            continue
        yield ("\n" if after_another and not started else "") + "\n" * held + body
        started, held = True, len(text) - len(body)
    if started:
        yield "\n"


def read_text(path: str, encoding: str = "utf-8", keep_cr: bool = False) -> str:
    """One text file, normalised as training reads it (see ``read_pieces``)."""
    return "".join(read_pieces([path], encoding, keep_cr))


@dataclass(frozen=True)
class CorpusText:
    """The whole corpus as one string (for the word level, which tokenizes it)."""

    text: str
    files: tuple[str, ...]
    notes: tuple[str, ...] = ()


def read_corpus_text(
    data_dir: str, encoding: str = "utf-8", keep_cr: bool = False, progress=None
) -> CorpusText:
    """The corpus of ``data_dir`` in memory, read as ``load_corpus`` reads it."""
    files = corpus_files(data_dir)
    stats = ReadStats()
    text = "".join(read_pieces(files, encoding, keep_cr, stats, progress=progress))
    if not text:
        raise DataError(_empty_message(data_dir, files))
    return CorpusText(text, tuple(files), stats.notes())


def _empty_message(data_dir: str, files: list[str]) -> str:
    if _is_documents(files):
        return f"the *.txt files in {data_dir} are empty; put some text in them"
    return f"{files[0]} is empty; put some text in it"


# ---------------------------------------------------------------- the id cache


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


def fallback_cache_dir(data_dir: str) -> str | None:
    """Where the cache goes when ``data_dir`` is not writable:
    ``$KERASGEN_CACHE_DIR/<key>`` if set, else ``~/.cache/kerasgen/<key>``, where
    ``<key>`` is a hash of the absolute path of ``data_dir``. None without a home."""
    root = os.environ.get(CACHE_DIR_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "kerasgen"
    )
    if root.startswith("~"):
        return None  # no home folder: never fall back to the current directory
    key = hashlib.sha256(os.fsencode(os.path.realpath(data_dir))).hexdigest()[:16]
    return os.path.join(os.path.abspath(root), key)


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
    that folder is not writable, under ``fallback_cache_dir``; if neither is,
    the ids stay in memory. ``notes`` on the result say which.

    Building it reads the files twice in chunks of ``chunk_bytes``: once to
    count the characters (the vocabulary, ``Vocabulary.from_counts``: the
    order of ``Vocabulary.from_text``) and hash the bytes, once to write the
    ids. Memory grows with the chunk size, not with the corpus.
    ``progress(done_bytes, total_bytes, stage)``, stage one of "hashing"
    (checking a cache), "counting", "encoding", is called after each chunk.
    """
    files = corpus_files(data_dir)
    stamps = [_stamp(p) for p in files]
    folders = [data_dir]
    fallback = fallback_cache_dir(data_dir)
    if fallback is not None and os.path.realpath(fallback) != os.path.realpath(data_dir):
        folders.append(fallback)
    # What a cache must match, but for the sha256 of each file.
    head = {"format": CACHE_FORMAT, "encoding": encoding, "keep_cr": bool(keep_cr)}
    sized = [[os.path.basename(p), size] for p, (size, _) in zip(files, stamps)]

    # Hash only when a cache could match: same settings, names and sizes.
    candidates = [
        (folder, meta)
        for folder in folders
        if (meta := _read_meta(folder)) is not None
        and all(meta.get(k) == v for k, v in head.items())
        and [f[:2] for f in meta["files"]] == sized
    ]
    hashes = [hashlib.sha256() for _ in files]
    if candidates:
        _hash_files(files, hashes, chunk_bytes, progress)
        listed = [[*ns, h.hexdigest()] for ns, h in zip(sized, hashes)]
        for folder, meta in candidates:
            if meta["files"] == listed and (cached := _read_ids(folder, meta)) is not None:
                vocab, ids, stats = cached
                where = () if folder == data_dir else (f"read the data cache from {folder}",)
                return Corpus(vocab, ids, tuple(files), folder, stats.notes() + where)

    # Pass 1: count the characters, hashing the bytes if that was not done above.
    stats = ReadStats()
    counts = np.zeros(256, np.int64)  # by code point
    for piece in read_pieces(
        files,
        encoding,
        keep_cr,
        stats,
        chunk_bytes,
        None if candidates else hashes,
        progress,
        "counting",
    ):
        counts = _count(piece, counts)
    codes = np.flatnonzero(counts)
    if codes.size == 0:
        raise DataError(_empty_message(data_dir, files))
    vocab = Vocabulary.from_counts({chr(c): int(counts[c]) for c in codes})
    length = int(counts.sum())
    meta = {
        **head,
        "files": [[*ns, h.hexdigest()] for ns, h in zip(sized, hashes)],
        "length": length,
        "normalised": dataclasses.asdict(stats),
        "vocab": json.loads(vocab.to_json()),
    }

    def encoded():
        """Pass 2: the ids of each piece; DataError if a file changed since pass 1."""
        encode, done = _encoder(vocab), 0
        for piece in read_pieces(
            files, encoding, keep_cr, None, chunk_bytes, None, progress, "encoding"
        ):
            ids = encode(piece)
            done += len(ids)
            if done > length:
                break
            yield ids
        _check_unchanged(files, stamps, done != length)

    failures = []  # (folder, why the cache could not be written there)
    for folder in folders:
        try:
            ids = _write_cache(folder, meta, vocab.id_dtype, encoded())
        except OSError as e:  # read errors are DataError: this one is the cache's
            failures.append((folder, e.strerror or str(e)))
            continue
        notes = stats.notes()
        if folder != data_dir:
            notes += (
                f"{data_dir} is not writable ({failures[0][1]}), so the data cache is in {folder}",
            )
        return Corpus(vocab, ids, tuple(files), folder, notes)

    ids, at = np.empty(length, vocab.id_dtype), 0
    for piece_ids in encoded():
        ids[at : at + len(piece_ids)] = np.frombuffer(piece_ids, vocab.id_dtype)
        at += len(piece_ids)
    why = "; ".join(f"{folder}: {reason}" for folder, reason in failures)
    return Corpus(
        vocab,
        ids,
        tuple(files),
        None,
        stats.notes()
        + (
            f"no data cache could be written ({why}); the ids are kept in memory and rebuilt "
            f"next time (set {CACHE_DIR_ENV} to a writable folder to keep one)",
        ),
    )


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _check_unchanged(files: list[str], stamps: list, mismatch: bool = False) -> None:
    for path, stamp in zip(files, stamps):
        if mismatch or _stamp(path) != stamp:
            raise DataError(
                f"{path} changed while it was being read; run again once it stays the same"
            )


def _hash_files(files: list[str], hashes: list, chunk_bytes: int, progress) -> None:
    """Feed each file's bytes to its ``hashlib`` object."""
    total, done = sum(os.path.getsize(p) for p in files), 0
    for path, h in zip(files, hashes):
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(chunk_bytes), b""):
                    h.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total, "hashing")
        except OSError as e:
            raise DataError(
                f"{path}: cannot be read ({e.strerror}); check its permissions"
            ) from None


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


def _read_meta(folder: str) -> dict | None:
    """The cache JSON in ``folder`` if there is one with a well-formed file list."""
    try:
        with open(os.path.join(folder, CACHE_JSON), encoding="utf-8") as f:
            meta = json.load(f)
        if (
            isinstance(meta, dict)
            and isinstance(meta.get("files"), list)
            and all(isinstance(f, list) and len(f) == 3 for f in meta["files"])
        ):
            return meta
    except (OSError, ValueError):
        pass
    return None  # no cache, or a damaged one: rebuild it


def _read_ids(folder: str, meta: dict):
    """(vocab, memory-mapped ids, ReadStats) of a cache that matched, or None if damaged."""
    try:
        vocab = Vocabulary.from_json(json.dumps(meta["vocab"]))
        stats = ReadStats(**meta["normalised"])
        ids = np.load(os.path.join(folder, CACHE_IDS), mmap_mode="r", allow_pickle=False)
        if ids.ndim != 1 or ids.size != meta["length"] or ids.dtype != vocab.id_dtype:
            return None
        if _crc32(ids) != meta["ids_crc32"]:  # bytes changed on disk since it was written
            return None
        return vocab, ids, stats
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _crc32(ids: np.ndarray) -> int:
    """CRC-32 of the ids' bytes, in blocks (a memory map is read, never copied whole)."""
    crc, flat = 0, ids.reshape(-1).view(np.uint8)
    for start in range(0, flat.size, CHUNK_BYTES):
        crc = zlib.crc32(flat[start : start + CHUNK_BYTES], crc)
    return crc


def _write_cache(folder: str, meta: dict, dtype: np.dtype, pieces) -> np.ndarray:
    """Write the ids (an iterable of arrays or bytes) and the JSON that vouches for
    them into ``folder``; return the ids memory-mapped. OSError if it cannot."""
    os.makedirs(folder, exist_ok=True)
    cache_ids, cache_json = os.path.join(folder, CACHE_IDS), os.path.join(folder, CACHE_JSON)
    # The old JSON goes first and the new one comes last, after the ids: a
    # crash in between leaves ids that no JSON vouches for, and the cache is
    # simply rebuilt. Plain sequential writes rather than a writable memmap:
    # dirty mapped pages would count towards this process's memory,
    # page-cache writes do not. A process still reading the old ids keeps
    # its mapping of the replaced file.
    with atomic.atomic_path(cache_ids, suffix=".npy") as tmp:
        with contextlib.suppress(FileNotFoundError):
            os.remove(cache_json)
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f,
                {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": (meta["length"],),
                },
            )
            crc = 0
            for piece in pieces:  # raises DataError if the text changed meanwhile
                f.write(piece)
                crc = zlib.crc32(piece, crc)
    atomic.write_text(cache_json, json.dumps({**meta, "ids_crc32": crc}, ensure_ascii=False))
    return np.load(cache_ids, mmap_mode="r", allow_pickle=False)


# ---------------------------------------------------------------- splits


def split(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Train on the first ``1 - val_frac`` of the text, validate on the LAST part
    (nanoGPT's split, so held-out numbers are comparable across tools). With a
    folder of documents that is the last documents (by name), and part of the
    one where the cut falls. Views, not copies: a memory-mapped ``ids`` stays so."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"--val_frac must be in [0, 1), got {val_frac}")
    n_val = round(len(ids) * val_frac)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def split_text(text: str, val_frac: float) -> tuple[str, str]:
    """The same cut as ``split``, on the text itself: the last ``val_frac`` of its characters."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"--val_frac must be in [0, 1), got {val_frac}")
    n_val = round(len(text) * val_frac)
    return text[: len(text) - n_val], text[len(text) - n_val :]


class TokenSplits(NamedTuple):
    """What ``load_token_splits`` returns."""

    vocab: object  # a WordVocabulary or BpeVocabulary
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
    No cache: learning and encoding take a second or two per MB.
    """
    from kerasgen.vocab import build_vocabulary

    corpus = read_corpus_text(data_dir, encoding, keep_cr, progress)
    train_text, val_text = split_text(corpus.text, val_frac)
    if vocab is None:
        vocab = build_vocabulary(train_text, level, max_vocab, vocab_size)
    return TokenSplits(
        vocab, vocab.encode(train_text), vocab.encode(val_text), len(train_text), corpus.notes
    )


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
            f"--batch_size {batch_size} x --seq_length {seq_length} (needs {need}); "
            "use a smaller --batch_size or --seq_length, or more text"
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
                raise ValueError(
                    f"order must be a permutation of the {self.windows} windows, "
                    f"got shape {order.shape}"
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
    rounds for up to a minute, and dropping an iterator waits for it to wake,
    which stalled training at epoch ends by up to about 25 s; reading a batch
    is cheap, so fixed settings lose nothing."""
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
