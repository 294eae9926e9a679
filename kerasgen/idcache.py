"""The id cache of a corpus: its ids on disk, and the record that vouches for them.

``kerasgen_cache.npy`` holds the text as ids; ``kerasgen_cache.json`` holds the
vocabulary, the reading settings, the name, size and sha256 of every corpus
file, and the CRC-32 of the ids. Both are written atomically, the JSON last.
The cache goes beside the corpus or, when that folder is not writable, under
``fallback_cache_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import zlib

import numpy as np

from kerasgen import atomic
from kerasgen.errors import DataError
from kerasgen.textfiles import CHUNK_BYTES, ReadStats
from kerasgen.vocab import Vocabulary

CACHE_JSON = "kerasgen_cache.json"  # vocabulary + fingerprint of the corpus files
CACHE_IDS = "kerasgen_cache.npy"  # the text as ids
# 2: several files, keep_cr, ids in the smallest dtype (uint8 up to 256); 3: the CRC-32 of
# the ids, checked whenever the cache is opened
CACHE_FORMAT = 3
CACHE_DIR_ENV = "KERASGEN_CACHE_DIR"  # where caches go when the data folder is read-only


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


def cache_folders(data_dir: str) -> list[str]:
    """Where the cache of ``data_dir`` may be, in the order tried: ``data_dir``, then
    ``fallback_cache_dir`` unless it is the same folder or there is none."""
    folders = [data_dir]
    fallback = fallback_cache_dir(data_dir)
    if fallback is not None and os.path.realpath(fallback) != os.path.realpath(data_dir):
        folders.append(fallback)
    return folders


def settings(encoding: str, keep_cr: bool) -> dict:
    """The entries of the cache JSON that the reading settings must match."""
    return {"format": CACHE_FORMAT, "encoding": encoding, "keep_cr": bool(keep_cr)}


def sized_files(files: list[str], stamps: list) -> list[list]:
    """``[name, size]`` of each file (``stamps``: ``textfiles.stamp`` of each)."""
    return [[os.path.basename(p), size] for p, (size, _) in zip(files, stamps)]


def listed_files(sized: list[list], hashes: list) -> list[list]:
    """``[name, size, sha256]`` of each file: the ``files`` entry of the cache JSON."""
    return [[*ns, h.hexdigest()] for ns, h in zip(sized, hashes)]


def candidates(folders: list[str], head: dict, sized: list[list]) -> list[tuple[str, dict]]:
    """(folder, cache JSON) of the caches that match ``settings`` and ``sized_files``:
    only their sha256 is left to check, so the files need hashing only if there are any."""
    return [
        (folder, meta)
        for folder in folders
        if (meta := _read_meta(folder)) is not None
        and all(meta.get(k) == v for k, v in head.items())
        and [f[:2] for f in meta["files"]] == sized
    ]


def hash_files(files: list[str], hashes: list, chunk_bytes: int, progress) -> None:
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


def open_matching(found: list[tuple[str, dict]], listed: list[list]):
    """(folder, vocab, memory-mapped ids, ReadStats) of the first of the ``candidates``
    that lists exactly ``listed_files`` and is intact, or None."""
    for folder, meta in found:
        if meta["files"] == listed and (cached := _read_ids(folder, meta)) is not None:
            return (folder, *cached)
    return None


def new_meta(
    head: dict, listed: list[list], length: int, stats: ReadStats, vocab: Vocabulary
) -> dict:
    """The cache JSON of a corpus of ``length`` ids, but for the CRC-32 of the ids."""
    return {
        **head,
        "files": listed,
        "length": length,
        "normalised": dataclasses.asdict(stats),
        "vocab": json.loads(vocab.to_json()),
    }


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


def write_cache(folder: str, meta: dict, dtype: np.dtype, pieces) -> np.ndarray:
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
