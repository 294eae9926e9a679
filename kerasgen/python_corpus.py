"""The Python corpus: source files joined into one training text (``kerasgen corpus python``).

The corpus is every ``*.py`` file under the given
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
  edit" (any case): in the standard library, the charmap tables in
  ``encodings/``, ``token.py``, ``keyword.py``, ``stringprep.py`` and
  ``re/_casefix.py``.
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
  The default holds the whole standard library as the defaults keep it: a
  model trained for a fixed time writes more code that parses from more code
  than from the same code seen more often (docs/python-code.md), while a
  huge folder still makes no runaway text.

The text is deterministic: the same files (and, reformatted, the same Python
version) give byte-identical output.
"""

from __future__ import annotations

import ast
import io
import os
import re
import sysconfig
import tokenize
from dataclasses import dataclass, field

from kerasgen import atomic, checks
from kerasgen.errors import ParameterError
from kerasgen.python_syntax import PARSE_ERRORS, parse_module, parses

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
class PythonCorpus:
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
        tree = parse_module(source)
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
    return stripped if parses(stripped) else source


def reformat_python(source: str) -> str:
    """``source`` as ``ast.unparse`` writes it: one statement per line (brackets never
    span lines), 4-space indents, one quoting style, even spacing; comments are lost.

    Source that does not parse comes back as it was, and so does source whose
    rewrite would hold non-ASCII characters it did not (``ast.unparse`` writes
    a printable character where the source had its escape): a corpus keeps the
    characters of its files.
    """
    try:
        text = ast.unparse(parse_module(source))
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
) -> PythonCorpus:
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
        raise ParameterError(
            "reformat",
            "cannot keep comments (ast.unparse drops them); pass comments=False, or "
            "reformat=False to keep the files as written",
        )
    checks.at_least("max_file_bytes", max_file_bytes, 0, "0: no limit")
    checks.at_least("max_chars", max_chars, 0, "0: no limit")
    candidates = _candidates(list(paths) if paths else default_paths())
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
        body, skip = _source(path, max_file_bytes, include_generated)
        if skip is not None:
            skipped[skip] += 1
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
    return PythonCorpus(text, tuple(files), skipped)


def _candidates(paths: list[str]) -> list[tuple[str, str, bool]]:
    """(path, header path, in tests?) of every file of ``paths``, in corpus order."""
    candidates = []
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
    return candidates


def _source(path: str, max_file_bytes: int, include_generated: bool):
    """(the file's text, None), or (None, why it is skipped)."""
    try:
        if max_file_bytes and os.path.getsize(path) > max_file_bytes:
            return None, SKIP_TOO_LARGE
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:  # a dangling symbolic link, no permission
        return None, SKIP_UNREADABLE
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, SKIP_NOT_UTF8
    if not body.strip():
        return None, SKIP_EMPTY
    if not include_generated and is_generated(body):
        return None, SKIP_GENERATED
    return body, None


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
) -> PythonCorpus:
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
            + "; pass folders holding .py files, include_tests=True, include_generated=True, "
            "or a larger max_file_bytes / max_chars"
        )
    atomic.write_text(out, corpus.text)
    return corpus
