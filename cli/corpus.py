"""``kerasgen corpus``: build training texts; ``corpus python`` joins Python source files."""

from __future__ import annotations

import click

import kerasgen
from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def corpus_group():
    """Build a training text (an input.txt) from files on disk."""


@corpus_group.command("python", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@option(
    "--out",
    default="data/python/input.txt",
    type=click.Path(dir_okay=False),
    help="Text file to write (its folder is created); train with --data_dir on its folder.",
)
@click.option(
    "--include_tests/--no_include_tests",
    "--include-tests/--no-include-tests",
    "include_tests",
    default=False,
    show_default=True,
    help="Keep test code: folders named test, tests, *_test, *_tests and files "
    "test_*.py, *_test.py, conftest.py.",
)
@click.option(
    "--include_generated/--no_include_generated",
    "--include-generated/--no-include-generated",
    "include_generated",
    default=False,
    show_default=True,
    help="Keep files whose first 1000 characters say 'automatically generated', "
    "'auto-generated', 'generated from' or 'do not edit'.",
)
@click.option(
    "--docstrings/--no_docstrings",
    " /--no-docstrings",
    "docstrings",
    default=False,
    show_default=True,
    help="Keep docstrings; by default those on lines of their own are dropped (not "
    "one that is a whole body): a model learns more code in the same time.",
)
@click.option(
    "--comments/--no_comments",
    " /--no-comments",
    "comments",
    default=False,
    show_default=True,
    help="Keep comments; by default they are dropped (a comment alone on its line "
    "takes the line with it). The file headers stay.",
)
@click.option(
    "--reformat/--no_reformat",
    " /--no-reformat",
    "reformat",
    default=None,
    help="Rewrite each file as ast.unparse prints it: one statement per line, "
    "4-space indents, one quoting style, even spacing: the model learns one "
    "layout. [default: reformat, unless --comments]",
)
@option(
    "--max_file_bytes",
    default=kerasgen.DEFAULT_MAX_FILE_BYTES,
    type=int,
    help="Skip files larger than this many bytes (0: no limit).",
)
@option(
    "--max_chars",
    default=kerasgen.DEFAULT_MAX_CHARS,
    type=int,
    help="Stop adding files once the next would take the text past this many "
    "characters (0: no limit).",
)
@library_errors
def python_command(
    paths,
    out,
    include_tests,
    include_generated,
    docstrings,
    comments,
    reformat,
    max_file_bytes,
    max_chars,
):
    """Join the *.py files under PATHS (default: this Python's standard library) into OUT.

    Folders are walked recursively in sorted order, skipping __pycache__,
    site-packages and hidden folders. Each file is preceded by a comment line
    "# ==== relative/path.py ====" and followed by two blank lines; newlines
    become \\n. Comments and docstrings are left out and each file is
    rewritten as ast.unparse prints it, unless asked otherwise. Files that are
    not UTF-8 are skipped, never mangled. The same files (and Python version)
    always give a byte-identical OUT.
    """
    corpus = kerasgen.build_python_corpus(
        out,
        paths,
        include_tests=include_tests,
        include_generated=include_generated,
        max_file_bytes=max_file_bytes,
        max_chars=max_chars,
        docstrings=docstrings,
        comments=comments,
        reformat=reformat,
    )
    skipped = ", ".join(
        f"{corpus.skipped[r]:,} {r.replace('_', ' ')}"
        for r in kerasgen.SKIP_REASONS
        if corpus.skipped.get(r)
    )
    click.echo(
        f"{len(corpus.files):,} files, {corpus.chars:,} characters, "
        f"{corpus.distinct_chars} distinct; skipped {skipped or 'none'}; wrote {out}",
        err=True,
    )


if __name__ == "__main__":
    from kerasgen_cli.native_logs import run_command

    run_command(corpus_group)
