"""Python source: the corpus to train on, and how much of what a model writes parses.

**The corpus** (``kerasgen corpus python``) is every ``*.py`` file under the given
folders (default: the running interpreter's standard library, so it works offline), in sorted
order, each preceded by a header comment and followed by two blank lines::

    # ==== json/decoder.py ====
    <the file's text, ending in exactly one newline>
    <blank line>
    <blank line>
    # ==== json/encoder.py ====
    ...

The header is a comment, so each file's part stays valid Python and the model
learns where one module ends and the next begins (two blank lines, as PEP 8
puts between top-level definitions). The path in the header is relative to the
folder given (``/``-separated); a file given directly is named by its basename.

What is kept, and how it is normalised:

- Folders below a given folder are walked recursively in sorted order
  (paths compared folder by folder), without following symbolic links.
  Skipped without counting: ``__pycache__``, ``site-packages``,
  ``dist-packages`` and hidden folders and files (name starting with ``.``).
- Tests are left out unless ``include_tests``: a file in a folder named
  ``test`` or ``tests`` or ending in ``_test``/``_tests`` (e.g. ``idle_test``)
  below the given folder (the given folder itself may be one), or a file named
  ``test_*.py``, ``*_test.py`` or ``conftest.py``. Test suites hold
  deliberately broken and Python-2 code (``lib2to3/tests/data``) and huge data
  tables, which teach a model nothing useful. A file named on the command line
  is always considered, whatever its name.
- Files larger than ``max_file_bytes`` are skipped, and so are machine-generated
  files unless ``include_generated``: those whose first 1,000 characters say
  "automatically generated", "auto-generated", "generated from" or "do not
  edit" (any case). In the standard library these are the ~60 charmap tables
  in ``encodings/`` (1.2 MB of ``'\\x80'  #  0x80 -> ...`` lines), plus
  ``token.py``, ``keyword.py``, ``stringprep.py`` and ``re/_casefix.py``.
- Files that are not valid UTF-8 are skipped and counted, never mangled, and
  so are files that cannot be read (dangling links). A leading byte-order
  mark is dropped.
- Newlines are normalised to ``\\n`` (``\\r\\n`` and lone ``\\r``, which
  Python's own tokenizer also reads as line ends). Tabs are kept as they are
  (expanding them would change string literals that contain them) unless the
  file is reformatted (below).
- Comments and docstrings are left out unless ``comments`` / ``docstrings``
  (``strip_python``; the file headers stay): a model trained for a fixed time
  then sees more code, and more of what it writes parses (docs/python-code.md).
- Each file is then rewritten as ``ast.unparse`` prints it (``reformat_python``:
  one statement per line, 4-space indents, one quoting style) unless
  ``reformat`` is False or comments are kept: the model learns one layout
  instead of many, and more of what it writes parses (docs/python-code.md).
  A file whose rewrite would hold a non-ASCII character it did not (a string
  written with escapes) stays as written. ``ast.unparse`` output differs a
  little between Python versions.
- Empty (whitespace-only) files, files that held only comments, and a second
  path to an already used file are skipped.
- ``max_chars`` caps the total: files are added in order until the next one
  would take the text past the cap; that file and all later ones are skipped.
  The default, 10,000,000 characters, holds the whole standard library as
  the defaults keep it (about 6 million characters): a model trained for a
  fixed time writes more code that parses from more code than from the same
  code seen more often (docs/python-code.md), while a huge folder still
  makes no runaway text.

The text is deterministic: the same files (and, reformatted, the same Python
version) give byte-identical output.

**The syntax measure** (``python_blocks`` / ``syntax_rate``): the fraction of generated
top-level blocks that ``ast.parse`` accepts. A sample is cut into blocks at
lines that start a top-level statement: a line whose first character (column 0)
is neither whitespace nor ``#`` starts a new block unless

- it continues the previous statement: it begins with ``else``, ``elif``,
  ``except``, ``finally`` (as a word) or a closing ``)``, ``]``, ``}``;
- it follows a decorator: after a column-0 ``@`` line, the next column-0 line
  that is not a decorator or closing bracket (the ``def``/``class``) joins its
  block;
- the block so far is an incomplete statement, as the standard library's
  ``codeop.compile_command(block, symbol="exec")`` judges it (returns None):
  inside an open bracket or triple-quoted string, after a trailing backslash,
  or a compound statement still waiting for its body. So a docstring with
  column-0 lines stays one block, while an unclosed bracket followed by a
  new statement yields one failing block, not a swallowed sample.

Comment and blank lines never start a block; they belong to the block they
follow. Text before the first line that starts a block is discarded (the
sample may begin mid-statement), and the last block of each sample is
excluded (it is cut off by the length limit), so an unterminated
triple-quoted string runs into that excluded last block. The metric is
parsed blocks / counted blocks, summed over all samples.
"""

from __future__ import annotations

import ast
import codeop
import dataclasses
import io
import math
import os
import re
import sysconfig
import tokenize
import warnings
from dataclasses import dataclass, field

import numpy as np

from kerasgen import atomic

FILE_HEADER = "# ==== {path} ====\n"
FILE_SEPARATOR = "\n\n"  # after each file's final newline: two blank lines
DEFAULT_MAX_FILE_BYTES = 200_000
DEFAULT_MAX_CHARS = 10_000_000  # the whole standard library, as the defaults keep it

PRUNED_FOLDERS = frozenset({"__pycache__", "site-packages", "dist-packages"})
TEST_FOLDER = re.compile(r"(.*_)?tests?")
TEST_FILE = re.compile(r"test_.*\.py|.*_test\.py|conftest\.py")
GENERATED_MARK = re.compile(
    r"automatically generated|auto-?generated|generated from|do not edit", re.IGNORECASE
)
GENERATED_WINDOW = 1000  # characters at the top of a file searched for GENERATED_MARK
SYNTAX_SAMPLE_CHARS = 2000  # characters per sample of the syntax measure
CONTINUATION = re.compile(r"(?:else|elif|except|finally)\b|[)\]}]")
CLOSING = re.compile(r"[)\]}]")
PARSE_ERRORS = (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError)

# Skip reasons, in the order a summary lists them.
SKIP_TESTS = "tests"
SKIP_TOO_LARGE = "too_large"
SKIP_UNREADABLE = "unreadable"
SKIP_NOT_UTF8 = "not_utf8"
SKIP_GENERATED = "generated"
SKIP_EMPTY = "empty"
SKIP_DUPLICATE = "duplicate"
SKIP_OVER_MAX_CHARS = "over_max_chars"
SKIP_REASONS = (
    SKIP_TESTS,
    SKIP_TOO_LARGE,
    SKIP_UNREADABLE,
    SKIP_NOT_UTF8,
    SKIP_GENERATED,
    SKIP_EMPTY,
    SKIP_DUPLICATE,
    SKIP_OVER_MAX_CHARS,
)


@dataclass(frozen=True)
class Corpus:
    """The joined text, which files went into it, and how many were skipped and why."""

    text: str
    files: tuple[str, ...]  # header paths, in order
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> number of files

    @property
    def chars(self) -> int:
        return len(self.text)

    @property
    def distinct_chars(self) -> int:
        return len(set(self.text))


def default_paths() -> list[str]:
    """The running interpreter's standard library folder."""
    return [sysconfig.get_paths()["stdlib"]]


def is_test_path(parts: tuple[str, ...]) -> bool:
    """Whether a path (components below the given folder, file name last) is test code."""
    *folders, name = parts
    return bool(TEST_FILE.fullmatch(name)) or any(TEST_FOLDER.fullmatch(f) for f in folders)


def _python_files(root: str):
    """(absolute path, path parts relative to ``root``) of every kept ``*.py``, sorted."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in PRUNED_FOLDERS and not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        prefix = () if rel == os.curdir else tuple(rel.split(os.sep))
        found.extend(
            (os.path.join(folder, name), prefix + (name,))
            for name in names
            if name.endswith(".py") and not name.startswith(".")
        )
    return sorted(found, key=lambda item: item[1])


def _normalise(text: str) -> str:
    """Drop a byte-order mark, turn CRLF and CR into LF, end with exactly one newline."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n") + "\n"


def is_generated(text: str) -> bool:
    """Whether the top of a file says it was machine-generated."""
    return GENERATED_MARK.search(text[:GENERATED_WINDOW]) is not None


def strip_python(source: str, docstrings: bool = True, comments: bool = True) -> str:
    """``source`` without its docstrings (``docstrings=False``) and/or comments
    (``comments=False``), everything else kept character for character.

    A comment alone on its line takes the line with it; a comment after code
    takes the spaces before it. A docstring goes with its lines when it has
    them to itself and is not the whole body (an empty body would not parse).
    Source that does not tokenize or parse, before or after, comes back as it
    was.
    """
    if docstrings and comments:
        return source
    lines = source.split("\n")
    drop, cut = set(), {}  # rows (0-based) to delete; row -> column where a comment starts
    try:
        tree = _parse(source)
        if not comments:
            for token in tokenize.generate_tokens(io.StringIO(source).readline):
                if token.type == tokenize.COMMENT:
                    row, col = token.start[0] - 1, token.start[1]
                    if lines[row][:col].strip():
                        cut[row] = col
                    else:
                        drop.add(row)
    except (*PARSE_ERRORS, tokenize.TokenError):
        return source
    if not docstrings:
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if not (
                isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and len(body) > 1
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                continue
            doc = body[0]
            first, last = lines[doc.lineno - 1], lines[doc.end_lineno - 1]
            # ast's columns count UTF-8 bytes.
            before = first.encode("utf-8")[: doc.col_offset].decode("utf-8", "replace")
            after = last.encode("utf-8")[doc.end_col_offset :].decode("utf-8", "replace")
            if not before.strip() and (
                not after.strip() or (not comments and after.lstrip().startswith("#"))
            ):
                drop.update(range(doc.lineno - 1, doc.end_lineno))
    kept = [
        line[: cut[row]].rstrip() if row in cut else line
        for row, line in enumerate(lines)
        if row not in drop
    ]
    stripped = "\n".join(kept)
    return stripped if _parses(stripped) else source


def reformat_python(source: str) -> str:
    """``source`` as ``ast.unparse`` writes it: one statement per line (brackets never
    span lines), 4-space indents, one quoting style, even spacing; comments are lost.

    Source that does not parse comes back as it was, and so does source whose
    rewrite would hold non-ASCII characters it did not (``ast.unparse`` writes
    a printable character where the source had its escape): a corpus keeps the
    characters of its files.
    """
    try:
        text = ast.unparse(_parse(source))
    except PARSE_ERRORS:
        return source
    if any(ord(c) > 127 for c in set(text) - set(source)):
        return source
    return text


def collect_python(
    paths=None,
    include_tests: bool = False,
    include_generated: bool = False,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_chars: int = DEFAULT_MAX_CHARS,
    docstrings: bool = False,
    comments: bool = False,
    reformat: bool | None = None,
) -> Corpus:
    """Join the Python files under ``paths`` (folders or files) into one text.

    ``paths`` defaults to the standard library. ``max_file_bytes`` and
    ``max_chars`` of 0 mean no limit. ``docstrings``/``comments`` True keep
    them (left out by default: ``strip_python``); ``reformat`` rewrites each
    file with ``reformat_python``, which cannot keep comments (None: unless
    ``comments``). See the module docstring for the rules.
    """
    if reformat is None:
        reformat = not comments
    if reformat and comments:
        raise ValueError(
            "--reformat cannot keep comments (ast.unparse drops them); "
            "pass --no_comments, or --no_reformat to keep the files as written"
        )
    if max_file_bytes < 0:
        raise ValueError(f"--max_file_bytes must be >= 0 (0: no limit), got {max_file_bytes}")
    if max_chars < 0:
        raise ValueError(f"--max_chars must be >= 0 (0: no limit), got {max_chars}")
    paths = list(paths) if paths else default_paths()
    candidates = []  # (absolute path, header path, test?) in corpus order
    for root in paths:
        if os.path.isfile(root):
            candidates.append((root, os.path.basename(root), False))
        elif os.path.isdir(root):
            candidates.extend(
                (path, "/".join(parts), is_test_path(parts)) for path, parts in _python_files(root)
            )
        else:
            raise FileNotFoundError(
                f"{root} does not exist; pass a folder or a .py file "
                "(or nothing, for the standard library)"
            )

    skipped = dict.fromkeys(SKIP_REASONS, 0)
    parts, files, seen = [], [], set()
    total, full = 0, False
    for path, name, is_test in candidates:
        if is_test and not include_tests:
            skipped[SKIP_TESTS] += 1
            continue
        if full:
            skipped[SKIP_OVER_MAX_CHARS] += 1
            continue
        real = os.path.realpath(path)
        if real in seen:
            skipped[SKIP_DUPLICATE] += 1
            continue
        try:
            if max_file_bytes and os.path.getsize(path) > max_file_bytes:
                skipped[SKIP_TOO_LARGE] += 1
                continue
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:  # a dangling symbolic link, no permission
            skipped[SKIP_UNREADABLE] += 1
            continue
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            skipped[SKIP_NOT_UTF8] += 1
            continue
        if not body.strip():
            skipped[SKIP_EMPTY] += 1
            continue
        if not include_generated and is_generated(body):
            skipped[SKIP_GENERATED] += 1
            continue
        body = strip_python(_normalise(body), docstrings, comments)
        body = _normalise(reformat_python(body) if reformat else body)
        if not body.strip():  # it held nothing but comments
            skipped[SKIP_EMPTY] += 1
            continue
        entry = FILE_HEADER.format(path=name) + body + FILE_SEPARATOR
        if max_chars and total + len(entry) > max_chars:
            full = True
            skipped[SKIP_OVER_MAX_CHARS] += 1
            continue
        seen.add(real)
        parts.append(entry)
        files.append(name)
        total += len(entry)
    # The last separator would only add blank lines at the very end.
    text = "".join(parts)[: -len(FILE_SEPARATOR)] if parts else ""
    return Corpus(text, tuple(files), skipped)


def build_python_corpus(
    out: str,
    paths=None,
    include_tests: bool = False,
    include_generated: bool = False,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_chars: int = DEFAULT_MAX_CHARS,
    docstrings: bool = False,
    comments: bool = False,
    reformat: bool | None = None,
) -> Corpus:
    """``collect_python`` and write the text to ``out`` atomically (UTF-8, ``\\n`` newlines).

    Raises ValueError, writing nothing, when no file was kept.
    """
    corpus = collect_python(
        paths,
        include_tests,
        include_generated,
        max_file_bytes,
        max_chars,
        docstrings,
        comments,
        reformat,
    )
    if not corpus.files:
        reasons = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in corpus.skipped.items() if n)
        raise ValueError(
            "no Python file was kept"
            + (f" (skipped: {reasons})" if reasons else " (no *.py files found)")
            + "; pass folders holding .py files, --include_tests, --include_generated, "
            "or a larger --max_file_bytes / --max_chars"
        )
    atomic.write_text(out, corpus.text)
    return corpus


# ---------------------------------------------------------------- Python syntax


def _is_code_start(line: str) -> bool:
    """A line starting at column 0 with something other than whitespace or a comment."""
    return bool(line) and not line[0].isspace() and line[0] != "#"


def _incomplete(source: str) -> bool:
    """Whether ``source`` is an unfinished statement that later lines could complete."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return codeop.compile_command(source, "<sample>", "exec") is None
        except PARSE_ERRORS:
            return False


def _parse(source: str) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. invalid escape sequences in generated strings
        return ast.parse(source)


def _parses(source: str) -> bool:
    try:
        _parse(source)
    except PARSE_ERRORS:
        return False
    return True


def block_starts(text: str) -> list[int]:
    """Offsets in ``text`` of the lines that start a top-level block (see the module docstring).

    Only complete lines (ending in a newline) are read: whether a line starts
    a block can depend on its first word (``else``), so an unfinished last
    line decides nothing.
    """
    # Split at "\n" only: str.splitlines would also break at form feeds and
    # other characters that Python source treats as ordinary whitespace.
    lines = text.split("\n")[:-1]
    starts, offset, decorating = [], 0, False
    for line in lines:
        if _is_code_start(line):
            if (
                not CONTINUATION.match(line)
                and not decorating
                and (not starts or not _incomplete(text[starts[-1] : offset]))
            ):
                starts.append(offset)
            decorating = line.startswith("@") or (decorating and bool(CLOSING.match(line)))
        offset += len(line) + 1
    return starts


def python_blocks(text: str) -> list[str]:
    """The complete top-level blocks of one generated sample (see the module docstring).

    Text before the first block and the last (cut-off) block are left out.
    """
    starts = block_starts(text)
    return [text[a:b] for a, b in zip(starts, starts[1:])]


def first_block(text: str, head: int = 0) -> str | None:
    """``text`` up to the end of its first complete block, or None if it has none yet.

    The block ends where the next block starts, at or after offset ``head``
    (the prime's length: a prime is always part of the first block). Lines
    before the block's first line (comments, blank lines, or an indented
    fragment that then fails to parse) belong to it.
    """
    starts = block_starts(text)
    return next((text[:end] for end in starts[1:] if end >= head), None)


def syntax_rate(texts) -> tuple[int, int]:
    """(blocks that ``ast.parse`` accepts, blocks counted) over all ``texts``."""
    blocks = [b for text in texts for b in python_blocks(text)]
    return sum(_parses(b) for b in blocks), len(blocks)


Z_95 = 1.959963984540054  # the standard normal quantile of 0.975


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default); None without trials.

    Unlike the normal approximation p +- z sqrt(p(1-p)/n), it stays inside
    [0, 1] and keeps its coverage near 0 and 1 and for small n (Wilson 1927;
    method 3 of Newcombe 1998, without continuity correction).
    """
    if trials <= 0:
        return None
    p = successes / trials
    shrink = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / shrink
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / shrink
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class SyntaxResult:
    ok: int  # blocks that parse
    total: int  # blocks counted
    samples: int
    chars: int  # generated characters per sample
    texts: tuple[str, ...]  # each sample: the prime, then what was generated
    blockless: int = 0  # samples with no complete block: nothing was counted from them
    prime: str = ""
    finished: int = 0  # with a prime: samples whose first block (the prime's) finished
    finished_ok: int = 0  # ... and parses

    @property
    def rate(self) -> float | None:
        return self.ok / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.ok, self.total)

    @property
    def never_at_column_0(self) -> float:
        """The share of samples that never returned to column 0 to start a second block."""
        return self.blockless / self.samples

    @property
    def finished_rate(self) -> float | None:
        return self.finished_ok / self.finished if self.finished else None

    @property
    def finished_interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.finished_ok, self.finished)

    def to_dict(self, options) -> dict:
        """The ``python_syntax`` object of ``kerasgen evaluate --json``."""
        result = {
            "ok": self.ok,
            "total": self.total,
            "rate": self.rate,
            "interval": _listed(self.interval),
            "samples": self.samples,
            "chars": self.chars,
            "never_at_column_0": self.never_at_column_0,
            **options.settings(),
        }
        if self.prime:
            result["prime"] = {
                "text": self.prime,
                "finished": self.finished,
                "ok": self.finished_ok,
                "rate": self.finished_rate,
                "interval": _listed(self.finished_interval),
            }
        return result


def _listed(interval):
    return None if interval is None else list(interval)


def sample_syntax(
    model, num_samples: int = 20, length: int = SYNTAX_SAMPLE_CHARS, options=None, prime: str = ""
) -> SyntaxResult:
    """Generate ``num_samples`` texts as one batch and measure their ``syntax_rate``.

    ``model``: a loaded model (``kerasgen.load``). Generation starts at a line
    start (after the run's preamble, or after a newline for runs without one),
    so the first character is at column 0; the newline is not part of the text.
    ``prime`` (e.g. ``"def "``) starts every sample and is part of its text;
    then the result also counts the samples whose first block (the one the
    prime starts) finished within ``length`` characters, and how many of
    those parse: what the first draw of ``BlockSampler`` would keep.
    """
    from kerasgen.sampling import SamplingOptions

    if num_samples < 1:
        raise ValueError(f"--python_syntax must be at least 1, got {num_samples}")
    if length < 1:
        raise ValueError(f"-n must be at least 1, got {length}")
    check_syntax_prime(model, prime)
    ids = model.sampler(num_samples).generate_ids(
        length, _line_start(model) + prime, options or SamplingOptions()
    )  # (N, length)
    return measure_syntax([prime + model.vocab.decode(row) for row in ids], length, prime)


def measure_syntax(texts, chars: int, prime: str = "") -> SyntaxResult:
    """The syntax measure of samples ``texts`` (each: ``prime``, then ``chars`` generated
    characters)."""
    texts = tuple(texts)
    blocks = [python_blocks(text) for text in texts]
    firsts = [first_block(text, len(prime)) for text in texts] if prime else []
    finished = [b for b in firsts if b is not None]
    return SyntaxResult(
        ok=sum(_parses(b) for sample in blocks for b in sample),
        total=sum(len(sample) for sample in blocks),
        samples=len(texts),
        chars=chars,
        texts=texts,
        blockless=sum(not sample for sample in blocks),
        prime=prime,
        finished=len(finished),
        finished_ok=sum(_parses(b) for b in finished),
    )


def _line_start(model) -> str:
    """What to read before a sample so that it starts at column 0: nothing after the run's
    preamble (a newline), a newline for runs trained before preambles existed."""
    vocab = model.vocab
    return "" if model.run.preamble.endswith("\n") or vocab.token_id("\n") is None else "\n"


def check_syntax_prime(model, prime: str) -> None:
    """Raise ValueError for a prime that cannot begin a sample of the syntax measure or of
    ``BlockSampler``: characters the model never saw, or an indented first line."""
    if prime[:1] in (" ", "\t"):
        raise ValueError(
            "--prime must start at column 0 to begin a top-level block (drop the "
            "leading whitespace)"
        )
    model.check_prime(prime)


# ---------------------------------------------------------------- code that parses

DEFAULT_TRIES = 20  # draws per block before a sample gives up
CONTEXT_CHARS = 4000  # each draw reads at most about this much of the text kept so far


@dataclass
class BlockStats:
    """What ``BlockSampler`` drew: every draw of a block, and the blocks it kept."""

    drawn: int = 0
    kept: int = 0
    unfinished: int = 0  # draws that did not reach the block's end within the limit
    gave_up: int = 0  # samples that ended early: a block failed every try

    @property
    def redraw_rate(self) -> float | None:
        """The share of drawn blocks thrown away (did not parse, or did not finish)."""
        return (self.drawn - self.kept) / self.drawn if self.drawn else None


class BlockSampler:
    """Python that parses: complete top-level blocks that ``ast.parse`` accepts.

    Text is drawn from the model as usual and cut into top-level blocks as
    the syntax measure cuts it (``first_block``). A block that parses is kept
    and yielded; one that does not (or that has not ended after ``limit``
    characters) is drawn again from the text kept so far, up to ``tries``
    draws per block; when they run out, ``stats.gave_up`` counts one more and
    the sample ends with the blocks kept before. Lines a draw makes before its
    block's first line (an indented continuation of the block before, a
    comment) are dropped rather than failing the block. A block ends where the next
    one starts; that start (the rest of the draw) begins the next block's
    first draw, so a block kept at the first try is exactly what plain
    sampling gives. The prime is part of the first block, kept only whole.

    Each draw ``d`` of sample ``s`` uses the seed ``SeedSequence([seed, s,
    d])``, so the same seed gives the same text. A draw reads the run's
    preamble and the text kept so far, from a block start at most about
    ``CONTEXT_CHARS`` back (a recurrent model is trained to start from zero
    at line starts; a transformer sees its context only), so time grows with
    the length, not its square. The per-draw ``tries`` is 1 with argmax
    sampling (``sample=0``), whose redraws would all be the same.
    """

    def __init__(self, model, tries: int = DEFAULT_TRIES):
        if tries < 1:
            raise ValueError(f"--tries must be at least 1, got {tries}")
        self.model, self.tries = model, tries
        self.stats = BlockStats()

    def stream(self, n: int, prime: str = "", options=None, sample: int = 0):
        """Yield kept blocks (the first starts with ``prime``) until the text holds at least
        ``n`` characters after the prime; ``sample``: this sample's number (for its seeds).

        The arguments are checked at once, before the first block is drawn.
        """
        from kerasgen.sampling import SamplingOptions

        if n < 0:
            raise ValueError(f"-n must be >= 0, got {n}")
        check_syntax_prime(self.model, prime)
        return self._blocks(n, prime, options or SamplingOptions(), sample)

    def _blocks(self, n: int, prime: str, options, sample: int):
        from kerasgen.sampling import ARGMAX

        tries = 1 if options.sample == ARGMAX else self.tries
        limit = self.limit(n)
        line_start = _line_start(self.model)
        kept, context_start, block_starts_kept = "", 0, []
        carry, draw = "", 0
        while len(kept) < len(prime) + n:
            for attempt in range(tries):
                head = prime if not kept else (carry if attempt == 0 else "")
                seed = np.random.SeedSequence([options.seed, sample, draw]).generate_state(1)[0]
                draw += 1
                block, rest = self._draw(
                    line_start + kept[context_start:],
                    head,
                    len(prime) if not kept else 0,
                    limit,
                    dataclasses.replace(options, seed=int(seed)),
                )
                self.stats.drawn += 1
                if block is None:
                    self.stats.unfinished += 1
                elif _parses(block):
                    break
            else:
                self.stats.gave_up += 1
                return
            self.stats.kept += 1
            block_starts_kept.append(len(kept))
            kept += block
            carry = rest
            # Read from the oldest kept block that still lies within CONTEXT_CHARS.
            while len(kept) - block_starts_kept[0] > CONTEXT_CHARS and len(block_starts_kept) > 1:
                block_starts_kept.pop(0)
            context_start = block_starts_kept[0]
            yield block

    @staticmethod
    def limit(n: int) -> int:
        """Characters a draw may generate to finish its block: ``n``, at least
        ``SYNTAX_SAMPLE_CHARS`` (the syntax measure's sample length)."""
        return max(n, SYNTAX_SAMPLE_CHARS)

    def _draw(self, context: str, head: str, head_length: int, limit: int, options):
        """(block, what follows it) drawn after ``context`` + ``head``; (None, "") when the
        block has not ended within ``limit`` generated characters."""
        text = head
        block = first_block(text, head_length) if head else None
        if block is None:
            vocab = self.model.vocab
            pieces = self.model.sampler(1).stream_ids(limit, context + head, options)
            try:
                for ids in pieces:
                    text += vocab.decode(ids[0])
                    block = first_block(text, head_length)
                    if block is not None:
                        break
            finally:
                pieces.close()
        if block is None:
            return None, ""
        rest = text[len(block) :]
        if not head_length:
            # What came before the block's first line (an indented line that continues
            # the block kept before it, a comment) is not part of it: dropped, as a
            # failed draw would be, instead of failing the block it precedes.
            block = block[block_starts(block)[0] :]
        return block, rest
