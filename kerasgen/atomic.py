"""Atomic file writes: write a temporary file beside the target, then rename.

A reader (or a crash) sees either the old file or the new one, never half of
one, because ``os.replace`` within one folder is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the umask.

    ``mkstemp`` creates its file 0o600; without this every checkpoint,
    config and corpus would be private to its owner.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


TMP_MARK = ".tmp"  # in the name of every temporary file (see ``is_leftover``)


def is_leftover(name: str) -> bool:
    """Whether a file name is one of ``atomic_path``'s temporary files (left by a kill)."""
    return name.startswith(".") and TMP_MARK in name


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "", before_replace=None):
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path``.

    ``suffix`` keeps an extension some writers insist on (numpy adds ``.npy``).
    ``before_replace(tmp)`` runs on the finished file just before the rename.
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=TMP_MARK + suffix, dir=folder
    )
    os.close(fd)
    try:
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else _new_file_mode())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
