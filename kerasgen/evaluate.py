"""Evaluate a trained run: held-out loss, and how well its samples start.

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
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from kerasgen import checks, data, rundir, textfiles
from kerasgen.model import family
from kerasgen.vocab import Vocabulary

STREAMS = 32  # parallel streams the held-out text is cut into
CHUNK_LENGTH = 256  # time steps per compiled call
MAX_SHOWN = 20  # unknown characters named in an error


# ---------------------------------------------------------------- held-out loss


def stream_layout(ids: np.ndarray, streams: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, targets and mask of shape (S, L) covering every target of ``ids`` once.

    Row j holds positions ``j*L .. (j+1)*L - 1`` of ``ids[:-1]`` (inputs) and
    ``ids[1:]`` (targets); the positions past the end are 0 with mask 0.
    """
    checks.at_least("streams", streams, 1)
    n = len(ids) - 1  # next-character targets
    if n < 1:
        raise ValueError(
            f"the text has {len(ids)} characters; it needs at least 2 to score one next character"
        )
    length = math.ceil(n / streams)
    x = np.zeros(streams * length, np.int32)
    y = np.zeros(streams * length, np.int32)
    mask = np.zeros(streams * length, np.float32)
    x[:n], y[:n], mask[:n] = ids[:-1], ids[1:], 1.0
    return x.reshape(streams, length), y.reshape(streams, length), mask.reshape(streams, length)


def evaluate_loss(
    model, ids: np.ndarray, chunk_length: int = CHUNK_LENGTH, jit_compile: bool = False
) -> float:
    """Mean cross-entropy (nats per token) of every next token of ``ids``.

    ``model`` maps ids (S, T) to logits (S, T, vocab) with a static batch size
    S, the number of streams (``build_model(config, S)``). Its state is reset
    first and carried from chunk to chunk; a transformer reads half-overlapping
    windows of its context (see the module docstring); a bigram reads each
    stream in one call.
    """
    import tensorflow as tf

    from kerasgen.model import context_length, family_of, reset_states

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
        steps = min(chunk_length, x.shape[1]) if family_of(model).recurrent else x.shape[1]
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
        total += float(
            chunk_loss(
                tf.constant(x[:, cut]), tf.constant(y[:, cut]), tf.constant(scored, tf.float32)
            )
        )
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

    def to_dict(self, save_dir: str) -> dict:
        """What ``kerasgen evaluate --json`` prints (see the README for each key)."""
        start = self.start
        return {
            "save_dir": save_dir,
            "checkpoint": self.checkpoint,
            "step": self.step,
            "text": self.source,
            "targets": self.targets,
            "streams": self.streams,
            "level": self.level,
            "chars": self.chars,
            "nats_per_token": self.nats_per_token,
            "unknown_targets": self.unknown,
            "nats_per_char": self.nats_per_char,
            "bits_per_char": self.bits_per_char,
            "cold_nats_per_char": start and start.cold_nats_per_char,
            "warm_nats_per_char": start and start.warm_nats_per_char,
            "start_penalty": start and start.ratio,
            "start_lines": start and start.lines,
        }


def _to_run_ids(ids: np.ndarray, vocab: Vocabulary, run_vocab: Vocabulary, what: str):
    """Re-map ids of ``vocab`` into ``run_vocab``; characters it lacks raise ValueError."""
    index = run_vocab.index
    mapping = np.array([index.get(c, -1) for c in vocab.chars], np.int64)
    mapped = mapping[ids]
    if (mapped < 0).any():
        missing = [vocab.chars[i] for i in np.unique(ids[mapped < 0])]
        shown = ", ".join(repr(c) for c in missing[:MAX_SHOWN])
        more = f" and {len(missing) - MAX_SHOWN} more" if len(missing) > MAX_SHOWN else ""
        raise ValueError(
            f"{what} has characters the model never saw in training: {shown}"
            f"{more}; evaluate on text of the kind it was trained on"
        )
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
    return HeldOut(
        ids,
        source,
        len(text) - len(pieces[0]) if pieces else 0,
        text,
        len(unknown),
        sum(vocab.spelling_nats(p) for p in unknown),
    )


def held_out_ids(
    run: rundir.Run,
    data_dir: str | None = None,
    text_file: str | None = None,
    encoding: str | None = None,
    text: str | None = None,
) -> HeldOut:
    """The text to score in the run's ids, what it is in words, how many characters
    the scored tokens stand for and (word level) what its unknown tokens hide.

    ``text_file``: the whole file; ``text``: the whole of this string. Otherwise
    the validation split of ``data_dir`` (default: the run's training data) cut
    exactly as training cut it, with the run's ``val_frac``: the same
    characters at every level.
    """
    train = run.train_config
    encoding = encoding or train.get("encoding", "utf-8")
    tokens = run.vocab.level != "char"  # encoded from the text, not the character cache
    if sum(x is not None for x in (data_dir, text_file, text)) > 1:
        raise ValueError("pass only one of data_dir, text and text_file")
    source = "the given text"
    if text_file is not None:
        if not os.path.isfile(text_file):
            raise FileNotFoundError(f"text_file {text_file} is not a file")
        text = textfiles.read_text(text_file, encoding, keep_cr=train.get("keep_cr", False))
        source = text_file
    if text is not None:
        try:
            ids = None if tokens else run.vocab.encode(text)
        except ValueError as e:  # names the characters the model never saw
            raise ValueError(f"text {source}: {e}") from None
        return _held_out(run, ids, source, text)

    if data_dir is None:
        data_dir = train.get("data_dir")
        if data_dir is None:
            raise ValueError(
                f"{run.save_dir} does not record its training data; pass data_dir or text_file"
            )
    val_frac = train.get("val_frac", 0.0)
    if not val_frac:
        raise ValueError(
            f"{run.save_dir} was trained with val_frac 0, so it has no held-out "
            "split; pass a text_file to evaluate on"
        )
    keep_cr = train.get("keep_cr", False)  # read the text as training read it
    try:
        if tokens:
            corpus = textfiles.read_corpus_text(data_dir, encoding, keep_cr)
        else:
            corpus = data.load_corpus(data_dir, encoding, keep_cr)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; or pass data_dir or text_file") from None
    what = (
        f"validation split of {textfiles.describe_files(corpus.files)} (last {val_frac * 100:g}%)"
    )
    if tokens:
        _, val_text = data.split_text(corpus.text, val_frac)
        return _held_out(run, None, what, val_text)
    _, val_ids = data.split(corpus.ids, val_frac)
    return _held_out(run, _to_run_ids(val_ids, corpus.vocab, run.vocab, f"the {what}"), what, None)


def evaluate_model(
    model,
    data_dir: str | None = None,
    text_file: str | None = None,
    encoding: str | None = None,
    streams: int = STREAMS,
    chunk_length: int = CHUNK_LENGTH,
    start: bool = True,
    text: str | None = None,
    held_out_loss=None,
    nats_after=None,
) -> LossResult:
    """Held-out loss of a loaded model (``kerasgen.load``; see ``held_out_ids`` for which
    text) and, with ``start``, its start penalty (``start_penalty``).

    ``held_out_loss(ids, streams, chunk_length)`` and ``nats_after`` (see
    ``start_penalty``) score with another runtime (an export's step); by default the
    run's Keras model scores.
    """
    run = model.run
    held = held_out_ids(run, data_dir, text_file, encoding, text)
    if held_out_loss is None:
        per_token = evaluate_loss(model.build(streams), held.ids, chunk_length)
    else:
        per_token = held_out_loss(held.ids, streams, chunk_length)
    targets = len(held.ids) - 1
    penalty = start_penalty(model, held.text, nats_after=nats_after) if start else None
    return LossResult(
        (per_token * targets + held.spelling_nats) / held.chars,
        targets,
        held.source,
        model.checkpoint,
        model.state.get("step"),
        streams,
        run.vocab.level,
        per_token,
        held.chars,
        held.unknown,
        penalty,
    )


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


def line_starts(
    text: str, count: int = START_LINES, chars: int = START_CHARS, before: int = WARM_CHARS
) -> list[int]:
    """Up to ``count`` evenly spread starts of non-empty lines of ``text`` with at least
    ``before`` characters before them and ``chars`` after."""
    found = [m.end() for m in re.finditer("\n", text)]
    found = [p for p in found if p >= before and p + chars <= len(text) and text[p] != "\n"]
    if not found:
        return []
    picks = np.unique(np.linspace(0, len(found) - 1, min(count, len(found))).round())
    return [found[int(i)] for i in picks]


def start_penalty(
    model,
    text: str,
    count: int = START_LINES,
    chars: int = START_CHARS,
    before: int = WARM_CHARS,
    nats_after=None,
) -> StartPenalty | None:
    """Mean nats/char over the first ``chars`` characters (whole tokens) of ``count``
    line starts of ``text``: cold, read after ``sampling.prefix_ids(vocab, preamble,
    "")`` from a zero state, exactly as ``kerasgen sample`` starts with an empty
    prime; warm, read after the ``before`` characters that precede the line (a
    transformer sees at most its context of either). None when ``text`` has no
    such line. ``nats_after(contexts, targets)``: the summed nats of each row's
    targets after its context, every row from a zero state (default: the run's Keras
    model scores).
    """
    from kerasgen.streams import prefix_ids

    vocab = model.vocab
    starts = line_starts(text, count, chars, before)
    if not starts:
        return None
    targets, covered, warm = [], 0, []
    for p in starts:
        ids, pieces = vocab.encode_pieces(text[p : p + chars + 200])
        taken, length = 0, 0
        while length < chars and taken < len(ids):  # whole tokens
            length += len(pieces[taken])
            taken += 1
        targets.append(ids[:taken].astype(np.int32))
        covered += length
        warm.append(vocab.encode(text[p - before : p]).astype(np.int32))
    common = min(len(w) for w in warm)  # the same context length for every line
    warm = [w[len(w) - common :] for w in warm]
    cold = [prefix_ids(vocab, model.run.preamble, "")] * len(starts)
    if nats_after is None:
        nats_after = functools.partial(_nats_after, model)
    return StartPenalty(
        nats_after(cold, targets) / covered,
        nats_after(warm, targets) / covered,
        len(starts),
        covered // len(starts),
    )


def _nats_after(model, contexts: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """Summed nats of each row's ``targets`` read after its context (all contexts one
    length), every row from a zero state."""
    import tensorflow as tf

    logits, labels, mask = logits_after(model, contexts, targets)
    nats = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tf.cast(logits, tf.float32)
    ).numpy()
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
        seqs[r, :start], seqs[r, start : start + len(target)] = context, target
        mask[r, : len(target)] = 1.0
    labels = seqs[:, start:]  # (K, J)
    window = model.config.context if family(model.config.model).windowed else 0
    if not window:
        # Targets sit at the same positions in every row: one call from a zero state.
        net = model.build(rows)
        reset_states(net)
        logits = net(seqs[:, :-1], training=False)[:, start - 1 :]  # (K, J, V)
    else:
        # A transformer: each target from its own window of the last ``window`` tokens,
        # left-aligned as the sampler's (K * J windows, scored in batches).
        ends = (start + np.arange(span))[None, :].repeat(rows, 0).reshape(-1)  # tokens before
        windows = np.zeros((len(ends), window), np.int32)
        for i, (row, end) in enumerate(zip(np.repeat(np.arange(rows), span), ends)):
            kept = seqs[row, max(0, end - window) : end]
            windows[i, : len(kept)] = kept
        filled = np.minimum(ends, window)
        net = model.build(WINDOW_BATCH)
        picked = []
        for b in range(0, len(windows), WINDOW_BATCH):
            part = windows[b : b + WINDOW_BATCH]
            padded = np.zeros((WINDOW_BATCH, window), np.int32)
            padded[: len(part)] = part
            out = net(padded, training=False).numpy()[: len(part)]
            picked.append(out[np.arange(len(part)), filled[b : b + WINDOW_BATCH] - 1])
        logits = np.concatenate(picked).reshape(rows, span, -1)
    return np.asarray(logits), labels, mask
