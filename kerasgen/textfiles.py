"""The text files of a corpus: which files, and their text read in pieces.

A corpus is ``data_dir/input.txt`` or, when there is no ``input.txt``, every
``*.txt`` file in ``data_dir`` (``corpus_files``). Files are read in chunks of
bytes, never whole, decoded strictly, with their byte-order mark dropped and
CR line ends read as LF unless asked to keep them (``read_pieces``).
"""

from __future__ import annotations

import codecs
import os
import shutil
import tempfile
from dataclasses import dataclass

from kerasgen import atomic
from kerasgen.errors import DataError, ParameterError

INPUT_NAME = "input.txt"
DOCUMENT_SUFFIX = ".txt"  # a folder without input.txt: every such file is one document
CHUNK_BYTES = 16 << 20  # bytes read at once; bounds the memory preprocessing needs

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


def empty_message(data_dir: str, files: list[str]) -> str:
    """The error for a corpus whose files hold no text."""
    if _is_documents(files):
        return f"the *.txt files in {data_dir} are empty; put some text in them"
    return f"{files[0]} is empty; put some text in it"


def stamp(path: str) -> tuple[int, int]:
    """Size and modification time of ``path``: what changes when the file is written."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def check_unchanged(files: list[str], stamps: list, mismatch: bool = False) -> None:
    """Raise DataError naming the first file whose ``stamp`` is no longer the one in
    ``stamps``, or the first file if ``mismatch`` (the text read differs anyway)."""
    for path, old in zip(files, stamps):
        if mismatch or stamp(path) != old:
            raise DataError(
                f"{path} changed while it was being read; run again once it stays the same"
            )


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
        raise ParameterError(
            "encoding",
            "must be the name of a text encoding Python knows, such as utf-8 or latin-1, "
            f"got {encoding!r}",
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
            "convert the file to UTF-8 or pass the right encoding (e.g. latin-1)"
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
        raise ParameterError("chunk_bytes", f"must be at least 1, got {chunk_bytes}")
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
    """The whole corpus as one string (for the levels whose tokens span characters)."""

    text: str
    files: tuple[str, ...]
    notes: tuple[str, ...] = ()


def read_corpus_text(
    data_dir: str, encoding: str = "utf-8", keep_cr: bool = False, progress=None
) -> CorpusText:
    """The corpus of ``data_dir`` in memory, read as ``data.load_corpus`` reads it."""
    files = corpus_files(data_dir)
    stats = ReadStats()
    text = "".join(read_pieces(files, encoding, keep_cr, stats, progress=progress))
    if not text:
        raise DataError(empty_message(data_dir, files))
    return CorpusText(text, tuple(files), stats.notes())
