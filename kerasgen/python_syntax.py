"""Python that a model writes: how much of it compiles, and sampling only what does.

**The syntax measure** (``python_blocks`` / ``syntax_rate``): the fraction of generated
top-level blocks that Python compiles (``compiles``: ``compile(block, "<sample>",
"exec")``, which also refuses ``return`` outside a function, ``break`` outside a loop,
a parameter named twice and the compiler's other rules). A sample is cut into blocks at
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
compiled blocks / counted blocks, summed over all samples.

**Code that compiles** (``BlockSampler``, ``kerasgen sample --syntax python``):
each top-level block is drawn again until it compiles.
"""

from __future__ import annotations

import ast
import codeop
import dataclasses
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np

from kerasgen import checks
from kerasgen.errors import ParameterError

SYNTAX_SAMPLE_CHARS = 2000  # characters per sample of the syntax measure
CONTINUATION = re.compile(r"(?:else|elif|except|finally)\b|[)\]}]")
CLOSING = re.compile(r"[)\]}]")
PARSE_ERRORS = (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError)


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


def parse_module(source: str) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. invalid escape sequences in generated strings
        return ast.parse(source)


def parses(source: str) -> bool:
    try:
        parse_module(source)
    except PARSE_ERRORS:
        return False
    return True


def compiles(source: str) -> bool:
    """Whether Python compiles ``source`` as a module: it parses, and the compiler's own
    rules hold (``return`` in a function, ``break`` in a loop, no parameter named twice,
    ...). The measure's and ``--syntax python``'s criterion."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(source, "<sample>", "exec", dont_inherit=True)
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
    """(blocks that compile, blocks counted) over all ``texts``."""
    blocks = [b for text in texts for b in python_blocks(text)]
    return sum(compiles(b) for b in blocks), len(blocks)


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
    ok: int  # blocks that compile
    total: int  # blocks counted
    samples: int
    chars: int  # generated characters per sample
    texts: tuple[str, ...]  # each sample: the prime, then what was generated
    blockless: int = 0  # samples with no complete block: nothing was counted from them
    prime: str = ""
    finished: int = 0  # with a prime: samples whose first block (the prime's) finished
    finished_ok: int = 0  # ... and compiles

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
    those compile: what the first draw of ``BlockSampler`` would keep.
    """
    from kerasgen.sampling import SamplingOptions

    if num_samples < 1:
        raise ParameterError("python_syntax", f"must be at least 1, got {num_samples}")
    if length < 1:
        raise ParameterError("n", f"must be at least 1, got {length}")
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
        ok=sum(compiles(b) for sample in blocks for b in sample),
        total=sum(len(sample) for sample in blocks),
        samples=len(texts),
        chars=chars,
        texts=texts,
        blockless=sum(not sample for sample in blocks),
        prime=prime,
        finished=len(finished),
        finished_ok=sum(compiles(b) for b in finished),
    )


def _line_start(model) -> str:
    """What to read before a sample so that it starts at column 0: nothing after the run's
    preamble (a newline), a newline for runs trained before preambles existed."""
    vocab = model.vocab
    return "" if model.run.preamble.endswith("\n") or vocab.token_id("\n") is None else "\n"


def check_syntax_prime(model, prime: str) -> None:
    """Raise ParameterError for a prime that cannot begin a sample of the syntax measure
    or of ``BlockSampler``: characters the model never saw, or an indented first line."""
    if prime[:1] in (" ", "\t"):
        raise ParameterError(
            "prime",
            "must start at column 0 to begin a top-level block (drop the leading whitespace)",
        )
    model.check_prime(prime)


# ---------------------------------------------------------------- code that compiles

DEFAULT_TRIES = 20  # draws per block before a sample gives up
CONTEXT_CHARS = 4000  # each draw reads at most about this much of the text kept so far


@dataclass
class BlockStats:
    """What ``BlockSampler`` drew: every draw of a block, and the blocks it kept."""

    drawn: int = 0
    kept: int = 0
    unfinished: int = 0  # draws that did not reach the block's end within the limit
    gave_up: int = 0  # samples that ended early: a block failed every try
    gave_up_samples: list[int] = dataclasses.field(default_factory=list)  # which ones
    limit: int = 0  # characters a draw could generate to finish its block

    @property
    def redraw_rate(self) -> float | None:
        """The share of drawn blocks thrown away (did not compile, or did not finish)."""
        return (self.drawn - self.kept) / self.drawn if self.drawn else None


class BlockSampler:
    """Python that compiles: complete top-level blocks that ``compiles`` accepts.

    Text is drawn from the model as usual and cut into top-level blocks as
    the syntax measure cuts it (``first_block``). A block that compiles is kept
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

    def __init__(self, model, tries: int = DEFAULT_TRIES, stats: BlockStats | None = None):
        checks.at_least("tries", tries, 1)
        self.model, self.tries = model, tries
        self.stats = BlockStats() if stats is None else stats

    def stream(self, n: int, prime: str = "", options=None, sample: int = 0):
        """Yield kept blocks (the first starts with ``prime``) until the text holds at least
        ``n`` characters after the prime; ``sample``: this sample's number (for its seeds).

        The arguments are checked at once, before the first block is drawn.
        """
        from kerasgen.sampling import SamplingOptions

        if n < 0:
            raise ParameterError("n", f"must be >= 0, got {n}")
        check_syntax_prime(self.model, prime)
        return self._blocks(n, prime, options or SamplingOptions(), sample)

    def _blocks(self, n: int, prime: str, options, sample: int):
        from kerasgen.sampling import ARGMAX

        tries = 1 if options.sample == ARGMAX else self.tries
        limit = self.stats.limit = self.limit(n)
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
                elif compiles(block):
                    break
            else:
                self.stats.gave_up += 1
                self.stats.gave_up_samples.append(sample)
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
