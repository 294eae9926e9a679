"""Evaluate a trained run: held-out loss, and how much of its Python parses.

Held-out loss (``evaluate_loss``): the mean cross-entropy of every next
character of a text, in nats per character (bits = nats / ln 2). Nothing is
subsampled: the ids are cut into ``S`` contiguous streams laid out as in
training (stream ``j`` is ``ids[j*L : (j+1)*L + 1]``, ``L = ceil((len(ids) - 1)
/ S)``), the tail is padded and the padding masked, so each of the
``len(ids) - 1`` targets is scored exactly once. The streams are read in chunks
of ``chunk_length`` steps with the recurrent state carried between chunks; each
stream starts from a zero state, as validation during training does.

A transformer sees at most ``context`` tokens, so it reads each stream in
windows of ``context`` tokens that overlap by half: the first window scores
all its targets, every later one only its second half, so each target is
scored once and (after the first window) with at least ``context / 2``
tokens before it. Validation during training instead scores whole
non-overlapping windows, where a target has ``context / 2`` tokens of
context on average, so it reads higher.

At word and bpe levels the loss is reported per token (the model's own loss)
and per character, which is comparable across levels: the same sum of nats,
plus (word level) for every held-out token outside the vocabulary the cost of
spelling it out with the training text's character frequencies (predicting
``<unk>`` alone would score a rare word as cheap), divided by the characters
the scored tokens stand for in the text (``vocab.encode_pieces``: all of it
but what the first token stands for).

Python syntax (``python_blocks`` / ``syntax_rate``): the fraction of generated
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
import math
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np

from kerasgen import data, rundir
from kerasgen.vocab import Vocabulary

STREAMS = 32  # parallel streams the held-out text is cut into
CHUNK_LENGTH = 256  # time steps per compiled call
SYNTAX_SAMPLE_CHARS = 2000
MAX_SHOWN = 20  # unknown characters named in an error

CONTINUATION = re.compile(r"(?:else|elif|except|finally)\b|[)\]}]")
CLOSING = re.compile(r"[)\]}]")
PARSE_ERRORS = (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError)


# ---------------------------------------------------------------- held-out loss

def stream_layout(ids: np.ndarray, streams: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, targets and mask of shape (S, L) covering every target of ``ids`` once.

    Row j holds positions ``j*L .. (j+1)*L - 1`` of ``ids[:-1]`` (inputs) and
    ``ids[1:]`` (targets); the positions past the end are 0 with mask 0.
    """
    if streams < 1:
        raise ValueError(f"--streams must be at least 1, got {streams}")
    n = len(ids) - 1  # next-character targets
    if n < 1:
        raise ValueError(f"the text has {len(ids)} characters; it needs at least 2 to score "
                         "one next character")
    length = math.ceil(n / streams)
    x = np.zeros(streams * length, np.int32)
    y = np.zeros(streams * length, np.int32)
    mask = np.zeros(streams * length, np.float32)
    x[:n], y[:n], mask[:n] = ids[:-1], ids[1:], 1.0
    return x.reshape(streams, length), y.reshape(streams, length), mask.reshape(streams, length)


def evaluate_loss(model, ids: np.ndarray, chunk_length: int = CHUNK_LENGTH,
                  jit_compile: bool = False) -> float:
    """Mean cross-entropy (nats per token) of every next token of ``ids``.

    ``model`` maps ids (S, T) to logits (S, T, vocab) with a static batch size
    S, the number of streams (``build_model(config, S)``). Its state is reset
    first and carried from chunk to chunk; a transformer reads half-overlapping
    windows of its context (see the module docstring); a bigram reads each
    stream in one call.
    """
    import tensorflow as tf

    from kerasgen.model import context_length, reset_states, rnn_layers

    if chunk_length < 1:
        raise ValueError(f"chunk_length must be at least 1, got {chunk_length}")
    streams = int(model.inputs[0].shape[0])
    x, y, mask = stream_layout(np.asarray(ids), streams)  # (S, L) each
    context = context_length(model)
    if context is not None:
        steps = context
        hop = max(context // 2, 1)
        windows = 1 + math.ceil(max(x.shape[1] - context, 0) / hop)
        pad = (windows - 1) * hop + context - x.shape[1]
        starts = [k * hop for k in range(windows)]
    else:
        steps = min(chunk_length, x.shape[1]) if rnn_layers(model) else x.shape[1]
        pad = -x.shape[1] % steps  # one chunk shape for every call: no retracing
        starts = range(0, x.shape[1] + pad, steps)
    x, y, mask = (np.pad(a, ((0, 0), (0, pad))) for a in (x, y, mask))

    @tf.function(jit_compile=jit_compile)
    def chunk_loss(x, y, mask):  # (S, T) int32, int32, float32
        logits = tf.cast(model(x, training=False), tf.float32)  # (S, T, vocab)
        nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)  # (S, T)
        return tf.reduce_sum(nats * mask)

    reset_states(model)
    total = 0.0  # a Python float: the sum over chunks is kept in float64
    for k, start in enumerate(starts):
        cut = slice(start, start + steps)
        scored = mask[:, cut]
        if context is not None and k > 0:  # the first half was scored by the last window
            scored = scored * (np.arange(steps) >= steps - hop)
        total += float(chunk_loss(tf.constant(x[:, cut]), tf.constant(y[:, cut]),
                                  tf.constant(scored, tf.float32)))
    return total / (len(ids) - 1)


@dataclass(frozen=True)
class LossResult:
    nats_per_char: float
    targets: int  # next tokens scored (characters at char level)
    source: str  # which text, in words
    checkpoint: str
    step: int | None  # training step of the checkpoint
    streams: int
    level: str = "char"
    nats_per_token: float | None = None  # the same sum per token (= nats_per_char at char level)
    chars: int | None = None  # characters the scored tokens stand for (= targets at char level)
    unknown: int = 0  # word level: targets that are <unk> (their spelling is charged per char)
    start: StartPenalty | None = None  # None: not measured, or no line start qualified

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)


def _to_run_ids(ids: np.ndarray, vocab: Vocabulary, run_vocab: Vocabulary, what: str):
    """Re-map ids of ``vocab`` into ``run_vocab``; characters it lacks raise ValueError."""
    index = run_vocab.index
    mapping = np.array([index.get(c, -1) for c in vocab.chars], np.int64)
    mapped = mapping[ids]
    if (mapped < 0).any():
        missing = [vocab.chars[i] for i in np.unique(ids[mapped < 0])]
        shown = ", ".join(repr(c) for c in missing[:MAX_SHOWN])
        more = f" and {len(missing) - MAX_SHOWN} more" if len(missing) > MAX_SHOWN else ""
        raise ValueError(f"{what} has characters the model never saw in training: {shown}"
                         f"{more}; evaluate on text of the kind it was trained on")
    return mapped


@dataclass(frozen=True)
class HeldOut:
    """The text to score, as the run's ids."""

    ids: np.ndarray
    source: str  # what it is, in words
    chars: int  # characters the scored targets (every token but the first) stand for
    text: str  # the text itself
    unknown: int = 0  # word level: targets that are the unknown token
    spelling_nats: float = 0.0  # word level: the cost of spelling those out (see WordVocabulary)


def _held_out(run: rundir.Run, ids: np.ndarray | None, source: str, text: str | None) -> HeldOut:
    """``ids`` (char level, from the cache) or ``text`` (other levels: encoded here)."""
    vocab = run.vocab
    if vocab.level == "char":
        return HeldOut(ids, source, len(ids) - 1, vocab.decode(ids) if text is None else text)
    ids, pieces = vocab.encode_pieces(text)
    unknown = []  # the texts of the targets that are the unknown token
    if vocab.level == "word":
        unknown = [p for i, p in zip(ids[1:], pieces[1:]) if i == vocab.unknown_id]
    return HeldOut(ids, source, len(text) - len(pieces[0]) if pieces else 0, text,
                   len(unknown), sum(vocab.spelling_nats(p) for p in unknown))


def held_out_ids(run: rundir.Run, data_dir: str | None = None, text_file: str | None = None,
                 encoding: str | None = None) -> HeldOut:
    """The text to score in the run's ids, what it is in words, how many characters
    the scored tokens stand for and (word level) what its unknown tokens hide.

    ``text_file``: the whole file. Otherwise the validation split of
    ``data_dir`` (default: the run's training data) cut exactly as training
    cut it, with the run's ``val_frac``: the same characters at every level.
    """
    train = run.train_config
    encoding = encoding or train.get("encoding", "utf-8")
    tokens = run.vocab.level != "char"  # encoded from the text, not the character cache
    if text_file is not None:
        if data_dir is not None:
            raise ValueError("pass --data_dir or --text, not both")
        if not os.path.isfile(text_file):
            raise FileNotFoundError(f"--text {text_file} is not a file")
        text = data.read_text(text_file, encoding)
        try:
            ids = None if tokens else run.vocab.encode(text)
        except ValueError as e:  # names the characters the model never saw
            raise ValueError(f"--text {text_file}: {e}") from None
        return _held_out(run, ids, text_file, text)

    if data_dir is None:
        data_dir = train.get("data_dir")
        if data_dir is None:
            raise ValueError(f"{run.save_dir} does not record its training data; "
                             "pass --data_dir or --text")
    val_frac = train.get("val_frac", 0.0)
    if not val_frac:
        raise ValueError(f"{run.save_dir} was trained with --val_frac 0, so it has no held-out "
                         "split; pass --text FILE to evaluate on a file")
    path = os.path.join(data_dir, data.INPUT_NAME)
    what = f"validation split of {path} (last {val_frac * 100:g}%)"
    try:
        if tokens:
            _, val_text = data.split_text(data.read_text(data.input_path(data_dir), encoding),
                                          val_frac)
            return _held_out(run, None, what, val_text)
        vocab, ids = data.load_corpus(data_dir, encoding)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; or pass --data_dir or --text") from None
    _, val_ids = data.split(ids, val_frac)
    return _held_out(run, _to_run_ids(val_ids, vocab, run.vocab, f"the {what}"), what, None)


def evaluate_model(model, data_dir: str | None = None, text_file: str | None = None,
                   encoding: str | None = None, streams: int = STREAMS,
                   chunk_length: int = CHUNK_LENGTH, start: bool = True) -> LossResult:
    """Held-out loss of a loaded model (``kerasgen.load``; see ``held_out_ids`` for which
    text) and, with ``start``, its start penalty (``start_penalty``)."""
    run = model.run
    held = held_out_ids(run, data_dir, text_file, encoding)
    per_token = evaluate_loss(model.build(streams), held.ids, chunk_length)
    targets = len(held.ids) - 1
    penalty = start_penalty(model, held.text) if start else None
    return LossResult((per_token * targets + held.spelling_nats) / held.chars, targets,
                      held.source, model.checkpoint, model.state.get("step"), streams,
                      run.vocab.level, per_token, held.chars, held.unknown, penalty)


def evaluate_run(save_dir: str, checkpoint: str = "best", data_dir: str | None = None,
                 text_file: str | None = None, encoding: str | None = None,
                 streams: int = STREAMS, chunk_length: int = CHUNK_LENGTH,
                 start: bool = True) -> LossResult:
    """``evaluate_model`` of the run in ``save_dir``."""
    from kerasgen.run import load

    return evaluate_model(load(save_dir, checkpoint, jit_compile=False), data_dir, text_file,
                          encoding, streams, chunk_length, start)


# ---------------------------------------------------------------- start penalty

START_LINES = 200  # line starts of the held-out text that are scored
START_CHARS = 16  # characters scored after each line start
WARM_CHARS = 512  # characters before a line start that the warm score reads
WINDOW_BATCH = 256  # transformer windows scored per call


@dataclass(frozen=True)
class StartPenalty:
    """How much worse a model predicts the first characters of a line when it starts
    where ``kerasgen sample`` starts than when it has read the text before the line."""

    cold_nats_per_char: float  # from the state ``kerasgen sample`` starts in
    warm_nats_per_char: float  # after the WARM_CHARS characters before the line
    lines: int
    chars: int  # characters scored after each line start (whole tokens: at least START_CHARS)

    @property
    def ratio(self) -> float:
        return self.cold_nats_per_char / self.warm_nats_per_char


def line_starts(text: str, count: int = START_LINES, chars: int = START_CHARS,
                before: int = WARM_CHARS) -> list[int]:
    """Up to ``count`` evenly spread starts of non-empty lines of ``text`` with at least
    ``before`` characters before them and ``chars`` after."""
    found = [m.end() for m in re.finditer("\n", text)]
    found = [p for p in found if p >= before and p + chars <= len(text) and text[p] != "\n"]
    if not found:
        return []
    picks = np.unique(np.linspace(0, len(found) - 1, min(count, len(found))).round())
    return [found[int(i)] for i in picks]


def start_penalty(model, text: str, count: int = START_LINES, chars: int = START_CHARS,
                  before: int = WARM_CHARS) -> StartPenalty | None:
    """Mean nats/char over the first ``chars`` characters (whole tokens) of ``count``
    line starts of ``text``: cold, read after ``sampling.prefix_ids(vocab, preamble,
    "")`` from a zero state, exactly as ``kerasgen sample`` starts with an empty
    prime; warm, read after the ``before`` characters that precede the line (a
    transformer sees at most its context of either). None when ``text`` has no
    such line.
    """
    from kerasgen.sampling import prefix_ids

    vocab = model.vocab
    starts = line_starts(text, count, chars, before)
    if not starts:
        return None
    targets, covered, warm = [], 0, []
    for p in starts:
        ids, pieces = vocab.encode_pieces(text[p:p + chars + 200])
        taken, length = 0, 0
        while length < chars and taken < len(ids):  # whole tokens
            length += len(pieces[taken])
            taken += 1
        targets.append(ids[:taken].astype(np.int32))
        covered += length
        warm.append(vocab.encode(text[p - before:p]).astype(np.int32))
    common = min(len(w) for w in warm)  # the same context length for every line
    warm = [w[len(w) - common:] for w in warm]
    cold = [prefix_ids(vocab, model.run.preamble, "")] * len(starts)
    return StartPenalty(_nats_after(model, cold, targets) / covered,
                        _nats_after(model, warm, targets) / covered, len(starts), covered // len(starts))


def _nats_after(model, contexts: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """Summed nats of each row's ``targets`` read after its context (all contexts one
    length), every row from a zero state."""
    import tensorflow as tf

    logits, labels, mask = logits_after(model, contexts, targets)
    nats = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tf.cast(logits, tf.float32)).numpy()
    return float((nats * mask).sum())


def logits_after(model, contexts: list[np.ndarray], targets: list[np.ndarray]):
    """The logits (K, J, V) that predict each row's ``targets`` (padded to J, with
    labels and a mask, each (K, J)) when the model reads the row's context and
    then the targets from a zero state; all contexts have one length."""
    from kerasgen.model import reset_states

    rows, span = len(contexts), max(len(t) for t in targets)
    start = len(contexts[0])
    seqs = np.zeros((rows, start + span), np.int32)
    mask = np.zeros((rows, span), np.float32)
    for r, (context, target) in enumerate(zip(contexts, targets)):
        seqs[r, :start], seqs[r, start:start + len(target)] = context, target
        mask[r, :len(target)] = 1.0
    labels = seqs[:, start:]  # (K, J)
    window = model.config.context if model.config.model == "transformer" else 0
    if not window:
        # Targets sit at the same positions in every row: one call from a zero state.
        net = model.build(rows)
        reset_states(net)
        logits = net(seqs[:, :-1], training=False)[:, start - 1:]  # (K, J, V)
    else:
        # A transformer: each target from its own window of the last ``window`` tokens,
        # left-aligned as the sampler's (K * J windows, scored in batches).
        ends = (start + np.arange(span))[None, :].repeat(rows, 0).reshape(-1)  # tokens before
        windows = np.zeros((len(ends), window), np.int32)
        for i, (row, end) in enumerate(zip(np.repeat(np.arange(rows), span), ends)):
            kept = seqs[row, max(0, end - window):end]
            windows[i, :len(kept)] = kept
        filled = np.minimum(ends, window)
        net = model.build(WINDOW_BATCH)
        picked = []
        for b in range(0, len(windows), WINDOW_BATCH):
            part = windows[b:b + WINDOW_BATCH]
            padded = np.zeros((WINDOW_BATCH, window), np.int32)
            padded[:len(part)] = part
            out = net(padded, training=False).numpy()[:len(part)]
            picked.append(out[np.arange(len(part)), filled[b:b + WINDOW_BATCH] - 1])
        logits = np.concatenate(picked).reshape(rows, span, -1)
    return np.asarray(logits), labels, mask


# ---------------------------------------------------------------- comparing runs

@dataclass(frozen=True)
class RunSummary:
    save_dir: str
    model: str  # family and size, e.g. "lstm 2x128"
    level: str
    params: int
    train_seconds: float | None  # in training steps, over the run and its continuations
    chars_per_s: float | None
    loss: LossResult


def compare_runs(save_dirs, data_dir: str | None = None, checkpoint: str = "best",
                 streams: int = STREAMS) -> list[RunSummary]:
    """Summaries of runs scored on one held-out text: the validation split of
    ``data_dir`` (default: the first run's training data), cut by each run's
    own ``val_frac``; the runs must agree on it, so every row scores the same
    characters, at any level.
    """
    from kerasgen.model import build_model, count_params

    save_dirs = list(save_dirs)
    if not save_dirs:
        raise ValueError("give at least one run folder to compare")
    runs = [rundir.read_run(d) for d in save_dirs]
    data_dir = data_dir or runs[0].train_config.get("data_dir")
    fracs = {run.train_config.get("val_frac") for run in runs}
    if len(fracs) > 1:
        raise ValueError("the runs held out different fractions (--val_frac "
                         + ", ".join(str(f) for f in sorted(fracs, key=str))
                         + "), so their validation splits differ; compare runs with the same one")
    rows = []
    for save_dir, run in zip(save_dirs, runs):
        which = checkpoint if run.has_checkpoint(checkpoint) else "latest"
        loss = evaluate_run(save_dir, which, data_dir=data_dir, streams=streams, start=False)
        state = rundir.read_checkpoint_state(save_dir, which)
        seconds = state.get("train_seconds")
        rows.append(RunSummary(
            save_dir, describe_model(run.model_config), run.vocab.level,
            count_params(build_model(run.model_config, 1)),
            seconds, state.get("train_chars", 0) / seconds if seconds else None, loss))
    return rows


def describe_model(config) -> str:
    """Family and size in a few characters: ``bigram``, ``lstm 2x128``,
    ``transformer 4x128 h4 ctx64``."""
    if config.model == "bigram":
        return "bigram"
    size = f"{config.model} {config.num_layers}x{config.rnn_size}"
    if config.model == "transformer":
        size += f" h{config.n_head} ctx{config.context}"
    return size


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
    at_line_start = model.run.preamble.endswith("\n") or vocab.token_id("\n") is None
    ids = model.sampler(num_samples).generate_ids(length, "" if at_line_start else "\n",
                                                 options or SamplingOptions())  # (N, length)
    texts = tuple(vocab.decode(row) for row in ids)
    ok, total = syntax_rate(texts)
    return SyntaxResult(ok, total, num_samples, length, texts)
