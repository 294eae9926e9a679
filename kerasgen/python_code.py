"""Python source: the corpus to train on, and how much of what a model writes parses.

**The corpus** (``kerasgen corpus python``) is every ``*.py`` file under the given folders (default: the
running interpreter's standard library, so it works offline), in sorted
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
  Python's own tokenizer also reads as line ends). Tabs are kept as they are:
  expanding them would change string literals that contain them.
- Empty (whitespace-only) files and a second path to an already used file
  are skipped.
- ``max_chars`` caps the total: files are added in order until the next one
  would take the text past the cap; that file and all later ones are skipped.
  The default, 5,000,000 characters, keeps an epoch of the default model
  short on a laptop CPU (about half of the standard library without tests
  and generated files; docs/python-code.md).

The text is deterministic: the same files give byte-identical output.

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
import os
import re
import sysconfig
import warnings
from dataclasses import dataclass, field

from kerasgen import atomic

FILE_HEADER = "# ==== {path} ====\n"
FILE_SEPARATOR = "\n\n"  # after each file's final newline: two blank lines
DEFAULT_MAX_FILE_BYTES = 200_000
DEFAULT_MAX_CHARS = 5_000_000  # keeps an epoch short on a laptop CPU

PRUNED_FOLDERS = frozenset({"__pycache__", "site-packages", "dist-packages"})
TEST_FOLDER = re.compile(r"(.*_)?tests?")
TEST_FILE = re.compile(r"test_.*\.py|.*_test\.py|conftest\.py")
GENERATED_MARK = re.compile(r"automatically generated|auto-?generated|generated from|do not edit",
                            re.IGNORECASE)
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
SKIP_REASONS = (SKIP_TESTS, SKIP_TOO_LARGE, SKIP_UNREADABLE, SKIP_NOT_UTF8, SKIP_GENERATED,
                SKIP_EMPTY, SKIP_DUPLICATE, SKIP_OVER_MAX_CHARS)


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
        subfolders[:] = [d for d in subfolders
                         if d not in PRUNED_FOLDERS and not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        prefix = () if rel == os.curdir else tuple(rel.split(os.sep))
        found.extend((os.path.join(folder, name), prefix + (name,)) for name in names
                     if name.endswith(".py") and not name.startswith("."))
    return sorted(found, key=lambda item: item[1])


def _normalise(text: str) -> str:
    """Drop a byte-order mark, turn CRLF and CR into LF, end with exactly one newline."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n") + "\n"


def is_generated(text: str) -> bool:
    """Whether the top of a file says it was machine-generated."""
    return GENERATED_MARK.search(text[:GENERATED_WINDOW]) is not None


def collect_python(paths=None, include_tests: bool = False, include_generated: bool = False,
                   max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                   max_chars: int = DEFAULT_MAX_CHARS) -> Corpus:
    """Join the Python files under ``paths`` (folders or files) into one text.

    ``paths`` defaults to the standard library. ``max_file_bytes`` and
    ``max_chars`` of 0 mean no limit. See the module docstring for the rules.
    """
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
            candidates.extend((path, "/".join(parts), is_test_path(parts))
                              for path, parts in _python_files(root))
        else:
            raise FileNotFoundError(f"{root} does not exist; pass a folder or a .py file "
                                    "(or nothing, for the standard library)")

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
        entry = FILE_HEADER.format(path=name) + _normalise(body) + FILE_SEPARATOR
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


def build_python_corpus(out: str, paths=None, include_tests: bool = False,
                        include_generated: bool = False,
                        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                        max_chars: int = DEFAULT_MAX_CHARS) -> Corpus:
    """``collect_python`` and write the text to ``out`` atomically (UTF-8, ``\\n`` newlines).

    Raises ValueError, writing nothing, when no file was kept.
    """
    corpus = collect_python(paths, include_tests, include_generated, max_file_bytes, max_chars)
    if not corpus.files:
        reasons = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in corpus.skipped.items() if n)
        raise ValueError(
            "no Python file was kept" + (f" (skipped: {reasons})" if reasons else
                                         " (no *.py files found)")
            + "; pass folders holding .py files, --include_tests, --include_generated, "
              "or a larger --max_file_bytes / --max_chars")
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


def _parses(source: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. invalid escape sequences in generated strings
        try:
            ast.parse(source)
        except PARSE_ERRORS:
            return False
    return True


def python_blocks(text: str) -> list[str]:
    """The complete top-level blocks of one generated sample (see the module docstring).

    Text before the first block and the last (cut-off) block are left out.
    """
    # Split at "\n" only: str.splitlines would also break at form feeds and
    # other characters that Python source treats as ordinary whitespace.
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    blocks, current, decorating = [], None, False  # current: lines of the open block
    for line in lines:
        if _is_code_start(line):
            starts = (not CONTINUATION.match(line) and not decorating
                      and (current is None or not _incomplete("".join(current))))
            if starts:
                if current is not None:
                    blocks.append("".join(current))
                current = []
            decorating = line.startswith("@") or (decorating and bool(CLOSING.match(line)))
        if current is not None:
            current.append(line)
    return [b for b in blocks if b.strip()]  # the open block is the cut-off last one


def syntax_rate(texts) -> tuple[int, int]:
    """(blocks that ``ast.parse`` accepts, blocks counted) over all ``texts``."""
    blocks = [b for text in texts for b in python_blocks(text)]
    return sum(_parses(b) for b in blocks), len(blocks)


@dataclass(frozen=True)
class SyntaxResult:
    ok: int  # blocks that parse
    total: int  # blocks counted
    samples: int
    chars: int  # generated characters per sample
    texts: tuple[str, ...]

    @property
    def rate(self) -> float | None:
        return self.ok / self.total if self.total else None


def sample_syntax(model, num_samples: int = 20, length: int = SYNTAX_SAMPLE_CHARS,
                  options=None) -> SyntaxResult:
    """Generate ``num_samples`` texts as one batch and measure their ``syntax_rate``.

    ``model``: a loaded model (``kerasgen.load``). Generation starts at a line
    start (after the run's preamble, or after a newline for runs without one),
    so the first character is at column 0; the newline is not part of the text.
    """
    from kerasgen.sampling import SamplingOptions

    if num_samples < 1:
        raise ValueError(f"--python_syntax must be at least 1, got {num_samples}")
    if length < 1:
        raise ValueError(f"-n must be at least 1, got {length}")
    vocab = model.vocab
    at_line_start = model.run.preamble.endswith("\n") or "\n" not in vocab.index
    ids = model.sampler(num_samples).generate_ids(length, "" if at_line_start else "\n",
                                                 options or SamplingOptions())  # (N, length)
    texts = tuple(vocab.decode(row) for row in ids)
    ok, total = syntax_rate(texts)
    return SyntaxResult(ok, total, num_samples, length, texts)
