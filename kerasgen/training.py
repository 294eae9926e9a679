"""Training: a text and settings go in, a run folder comes out.

``train`` (the public ``kerasgen.train``) turns options named as the CLI's
flags into settings and returns the trained model; ``run_training`` is a
short loop over named parts, each with one job:

- ``prepare_data``: the text -> vocabulary, training and validation batches
- ``Trainee``: the model, its optimizer and compiled steps, and the counters,
  restored from ``--init_from``
- ``Budget``: the wall-clock budget: when to stop, and how far the schedule is
- ``StopSignals``: Ctrl-C and SIGTERM raise a flag the loop checks between steps
- ``Checkpointer``: the latest and best checkpoints (only the chief writes)
- ``TensorBoardLog``: scalars and a text sample per epoch
- progress: Keras callbacks (``kerasgen.progress``)

The loop keeps the streams in order and resets the recurrent state where
char-rnn does (every epoch start, before validation); a stream whose batch
begins at a line start starts from a zero state (``steps.start_rows``).
A non-finite loss stops training at once, before anything is saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from kerasgen import data, rundir
from kerasgen.errors import DistributedError, DivergedError, Interrupted, StorageError
from kerasgen.model import RNN_FAMILIES, ModelConfig, build_model, count_params
from kerasgen.sampling import check_seed
from kerasgen.vocab import BYTES, DEFAULT_MAX_VOCAB, DEFAULT_VOCAB_SIZE, LEVELS, MAX_VOCAB_SIZE

TENSORBOARD_SAMPLE_CHARS = 300  # length of the text sample logged at each epoch end
LINE_START = "\n"  # the token sampling starts with: a zero state reads it first
LR_SCHEDULES = ("epoch", "cosine")
# Validation during training scores this many characters at the start of the held-out
# split (tiny Shakespeare's split is smaller: all of it): a fixed subset, so a big corpus
# can be validated often; kerasgen evaluate scores the whole split.
DEFAULT_EVAL_CHARS = 250_000
COSINE_FLOOR = 0.1  # the cosine schedule ends at this fraction of --learning_rate
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; defaults are those of char-rnn-tensorflow's train.py."""

    data_dir: str = "data/tinyshakespeare"
    encoding: str = "utf-8"
    save_dir: str = "save"
    log_dir: str = "logs"
    save_every: int = 1000
    seq_length: int = 50
    batch_size: int = 50
    num_epochs: int = 50
    grad_clip: float = 5.0  # clips the GLOBAL gradient norm, as char-rnn
    learning_rate: float = 0.002  # Adam; multiplied by decay_rate after every epoch
    decay_rate: float = 0.97
    val_frac: float = 0.1
    seed: int | None = None
    jit_compile: bool = False  # XLA-compile the train and eval steps (slower on CPU)
    time_budget: float | None = None  # seconds of wall clock, validation included
    lr_schedule: str = "epoch"  # "epoch": * decay_rate per epoch; "cosine": see learning_rate_at
    warmup_steps: int = 100  # linear warm-up of the cosine schedule
    # Compute with kerasgen.fused (same math, faster on a CPU); False: the Keras
    # layers (cuDNN on a GPU); None: fused unless a GPU is visible.
    fused: bool | None = None
    strategy: str = "default"  # kerasgen.distribute.STRATEGIES
    mixed_precision: bool = False  # mixed_float16 compute, float32 logits and loss (GPU)
    level: str = "char"  # kerasgen.vocab.LEVELS: one id per character, word-level token or subword
    max_vocab: int = DEFAULT_MAX_VOCAB  # word level: keep this many most frequent tokens
    vocab_size: int = DEFAULT_VOCAB_SIZE  # bpe level: tokens to learn (bytes included)
    keep_cr: bool = False  # keep "\r" in the text; False reads CRLF and lone CR as "\n"
    eval_every: int = 0  # also validate (and keep the best) every this many steps; 0: epoch ends
    eval_chars: int = DEFAULT_EVAL_CHARS  # validate on this much of the split; 0: all of it
    preset: str | None = None  # the kerasgen.presets name the settings started from (a label)

    def __post_init__(self):
        for name in ("seq_length", "batch_size", "num_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.save_every < 0:
            raise ValueError(
                f"--save_every must be >= 0 (0: only at epoch ends), got {self.save_every}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if not 0 < self.decay_rate <= 1:
            raise ValueError(f"--decay_rate must be in (0, 1], got {self.decay_rate}")
        if not self.grad_clip > 0:
            raise ValueError(f"--grad_clip must be > 0, got {self.grad_clip}")
        if not 0 <= self.val_frac < 1:
            raise ValueError(f"--val_frac must be in [0, 1), got {self.val_frac}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"--time_budget must be positive, got {self.time_budget}")
        check_seed(self.seed)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"unknown --lr_schedule {self.lr_schedule!r}; choose one of "
                + ", ".join(LR_SCHEDULES)
            )
        if self.eval_every < 0:
            raise ValueError(f"--eval_every must be >= 0 (0: at epoch ends), got {self.eval_every}")
        if self.eval_chars < 0:
            raise ValueError(
                f"--eval_chars must be >= 0 (0: the whole split), got {self.eval_chars}"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.level not in LEVELS:
            raise ValueError(f"unknown --level {self.level!r}; choose one of " + ", ".join(LEVELS))
        if self.max_vocab < 1:
            raise ValueError(f"--max_vocab must be at least 1, got {self.max_vocab}")
        if not BYTES <= self.vocab_size <= MAX_VOCAB_SIZE:
            raise ValueError(
                f"--vocab_size must be from {BYTES} (one token per byte) to "
                f"{MAX_VOCAB_SIZE:,}, got {self.vocab_size}"
            )
        if self.mixed_precision and self.strategy in ("mirrored", "multiworker"):
            raise ValueError(
                "--mixed_precision runs on one device for now; drop it or use --strategy default"
            )


def parse_duration(text: str) -> float:
    """Seconds from ``"600"``, ``"600s"``, ``"10m"``, ``"1.5h"``; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration; write e.g. 600s, 10m or 1h")
    return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]


def learning_rate_at(config: TrainConfig, epoch: int, step: int, progress: float) -> float:
    """The learning rate for the next step.

    ``epoch`` (char-rnn's): ``learning_rate * decay_rate ** epoch``.
    ``cosine``: a linear warm-up over ``warmup_steps``, then a cosine from
    ``learning_rate`` down to ``COSINE_FLOOR * learning_rate`` as ``progress``
    (the fraction of the run done: of ``time_budget`` by the wall clock when
    one is set, else of the steps of ``num_epochs``) goes from 0 to 1.
    """
    if config.lr_schedule == "epoch":
        return config.learning_rate * config.decay_rate**epoch
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return config.learning_rate * warmup * (COSINE_FLOOR + (1.0 - COSINE_FLOOR) * cosine)


@dataclass
class TrainResult:
    steps: int
    epochs: int  # completed epochs
    stopped_by_budget: bool
    train_loss: float
    val_loss: float | None
    best_val_loss: float | None
    chars_per_s: float
    seconds: float
    boundary_seconds: float  # spent between epochs: validation, checkpoints, TensorBoard
    save_dir: str
    log_dir: str
    notes: tuple[str, ...] = ()  # one-line remarks on the data (kerasgen.data.Corpus.notes)


# ---------------------------------------------------------------- the parts


@dataclass
class TrainingData:
    """What training reads: the vocabulary, the batches and what samples start with."""

    vocab: object  # kerasgen.vocab.Vocabulary or WordVocabulary
    model_config: ModelConfig
    train: data.StreamBatches
    val: data.StreamBatches | None  # None: no validation
    chars_per_token: float  # 1 at char level
    line_start_id: int | None  # the newline's id: streams reaching it restart from zero
    preamble: str  # what samples start after (the run folder records it)
    notes: tuple[str, ...]  # one-line remarks on reading the text, for the user


def prepare_data(
    config: TrainConfig, model_options: dict, run: rundir.Run | None, progress=None
) -> TrainingData:
    """Read the text, build (or, resuming, check) the vocabulary, cut the batches.

    ``progress(done_bytes, total_bytes, stage)``: see ``data.load_corpus``.
    """
    chars_per_token = 1.0
    if config.level != "char":
        vocab, train_ids, val_ids, train_chars, notes = data.load_token_splits(
            config.data_dir,
            config.encoding,
            config.val_frac,
            config.level,
            config.max_vocab,
            config.vocab_size,
            vocab=None if run is None else run.vocab,
            keep_cr=config.keep_cr,
            progress=progress,
        )
        chars_per_token = train_chars / max(len(train_ids), 1)
        model_config = ModelConfig(vocab_size=len(vocab), **model_options)
        if run is not None:
            _check_resumable(run, model_config, None)
            model_config = run.model_config
    else:
        corpus = data.load_corpus(
            config.data_dir, config.encoding, keep_cr=config.keep_cr, progress=progress
        )
        vocab, ids, notes = corpus.vocab, corpus.ids, corpus.notes
        model_config = ModelConfig(vocab_size=len(vocab), **model_options)
        if run is not None:
            ids = _check_resumable(run, model_config, vocab)[ids]
            vocab, model_config = run.vocab, run.model_config
        train_ids, val_ids = data.split(ids, config.val_frac)
    train = data.StreamBatches(
        train_ids, config.batch_size, config.seq_length, what="training text"
    )
    val = None
    if config.val_frac > 0:
        if config.eval_chars:  # tokens standing for about eval_chars characters
            val_ids = val_ids[: max(1, round(config.eval_chars / chars_per_token))]
        try:
            val = data.StreamBatches(
                val_ids, config.batch_size, config.seq_length, what="validation text"
            )
        except ValueError as e:
            raise ValueError(
                f"{e}; or raise --val_frac or --eval_chars, or pass --val_frac 0 to skip validation"
            ) from None
    line_start_id = vocab.token_id(LINE_START)
    return TrainingData(
        vocab,
        model_config,
        train,
        val,
        chars_per_token,
        line_start_id,
        LINE_START if line_start_id is not None else "",
        tuple(notes),
    )


def _check_resumable(run: rundir.Run, model_config: ModelConfig, vocab):
    """Refuse an ``--init_from`` run that does not fit; return data-id -> run-id mapping.

    ``vocab`` None (word level: the text is encoded with the run's vocabulary)
    checks the model only.
    """
    diffs = run.model_config.differences(model_config)
    diffs = [
        d.replace("context:", "context (--seq_length):")
        for d in diffs
        if not d.startswith("vocab_size")
    ]
    if diffs:
        raise ValueError(
            f"--init_from {run.save_dir} has a different model ("
            + "; ".join(f"saved {d.replace(' != ', ', requested ')}" for d in diffs)
            + "); drop the differing flags or train into a new --save_dir"
        )
    if vocab is None:
        return None
    missing = [c for c in vocab.chars if c not in run.vocab.index]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:20])
        raise ValueError(
            f"--init_from {run.save_dir} has a different vocabulary: the text has "
            f"characters the model never saw ({shown}); train a new model instead"
        )
    return np.array([run.vocab.index[c] for c in vocab.chars], dtype=run.vocab.id_dtype)


class Trainee:
    """The model, its optimizer and compiled steps, and the counters a checkpoint keeps."""

    def __init__(
        self,
        config: TrainConfig,
        training: TrainingData,
        strategy,
        distributed: bool,
        init_from: str | None,
    ):
        import keras
        import tensorflow as tf

        from kerasgen import distribute
        from kerasgen.steps import DistributedSteps, SingleDeviceSteps

        recurrent = training.model_config.model in RNN_FAMILIES
        fused = config.fused
        if fused is None:
            fused = distributed or not tf.config.list_physical_devices("GPU")
        if not recurrent:
            if distributed:
                raise ValueError(
                    f"--model {training.model_config.model} trains on one device; drop --strategy"
                )
            fused = False  # the fast path computes recurrent layers only
        if distributed and not fused:
            raise ValueError(
                "--no_fused works on one device only; drop it to train with "
                f"--strategy {config.strategy}"
            )
        self.recurrent = recurrent
        if config.seed is not None:
            keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            # Under a strategy each replica runs its share of the streams.
            self.model = build_model(
                training.model_config, distribute.replica_batch(config.batch_size, strategy)
            )
            optimizer = keras.optimizers.Adam(
                learning_rate=config.learning_rate, global_clipnorm=config.grad_clip
            )
            if config.mixed_precision:  # scales the loss so float16 gradients do not underflow
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
            # train_seconds / train_chars: time in training steps and characters
            # trained, over every run that continued this one (for kerasgen compare).
            self.state = {
                "step": 0,
                "epoch": 0,
                "batch": 0,
                "best_val_loss": None,
                "train_seconds": 0.0,
                "train_chars": 0,
            }
            if init_from is not None:
                self.state.update(
                    rundir.load_checkpoint(init_from, "latest", self.model, optimizer)
                )
                if self.state["batch"] >= len(training.train):  # the text shrank
                    self.state["epoch"], self.state["batch"] = self.state["epoch"] + 1, 0
            if distributed:
                self.steps = DistributedSteps(
                    strategy,
                    self.model,
                    optimizer,
                    config.batch_size,
                    config.jit_compile,
                    training.line_start_id,
                )
            else:
                self.steps = SingleDeviceSteps(
                    self.model,
                    optimizer,
                    fused=fused and not config.mixed_precision,
                    jit_compile=config.jit_compile,
                    line_start_id=training.line_start_id,
                )


class Budget:
    """The wall-clock budget, counted from the start of ``run_training``.

    Keeps back time for the final validation and checkpoints: the last epoch
    boundary's duration once one was measured; before that, an estimate from
    the step time (an eval step costs about a third of a training step, and
    compiling it about half the first step).
    """

    def __init__(self, seconds: float | None, val_steps: int):
        self.seconds, self.val_steps = seconds, val_steps
        self.started = time.perf_counter()
        self.deadline = None if seconds is None else self.started + seconds
        self.reserve = None
        self.spent = False
        self._first_step_seconds = None
        self._loop_started = None
        self._steps = 0

    def progress(self) -> float | None:
        """The fraction of the budget gone, or None without a budget."""
        if self.seconds is None:
            return None
        return (time.perf_counter() - self.started) / self.seconds

    def after_step(self) -> bool:
        """Count a training step; True when the time left is only the reserve."""
        if self.deadline is None:
            return False
        now = time.perf_counter()
        self._steps += 1
        if self._steps == 1:
            self._first_step_seconds = now - (self._loop_started or self.started)
            self._loop_started = now
        elif self.reserve is None:
            per_step = (now - self._loop_started) / (self._steps - 1)
            self.reserve = 1.0 + self._first_step_seconds / 2 + self.val_steps * per_step / 3
        if self.reserve is not None and now + self.reserve >= self.deadline:
            self.spent = True
        return self.spent

    def start_loop(self) -> None:
        self._loop_started = time.perf_counter()

    def after_boundary(self, seconds: float) -> None:
        self.reserve = seconds


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM set a flag that the loop checks between steps.

    So a signal never lands inside TensorFlow or a half-done step, and the
    latest checkpoint is saved before exiting. A second Ctrl-C stops at once.
    Installed only in the main thread (Python delivers signals there).
    """

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


class Checkpointer:
    """The latest and best checkpoints; only the chief of a multi-worker run writes.

    ``replacement``: the trained run this one replaces (``--overwrite``), deleted
    once the first checkpoint is saved.
    """

    def __init__(
        self,
        save_dir: str,
        trainee: Trainee,
        chief: bool,
        replacement: rundir.Replacement | None = None,
    ):
        self.save_dir, self.trainee, self.chief = save_dir, trainee, chief
        self.replacement = replacement

    def save(self, which: str) -> str:
        if not self.chief:
            return rundir.checkpoint_path(self.save_dir, which) + " (by the chief)"
        t = self.trainee
        path = rundir.save_checkpoint(
            self.save_dir, which, t.model, t.optimizer if which == "latest" else None, dict(t.state)
        )
        if self.replacement is not None:
            self.replacement.discard()
            self.replacement = None
        return path


class TensorBoardLog:
    """TensorBoard scalars, and a short sample from a batch-1 copy of the model."""

    def __init__(self, config: TrainConfig, training: TrainingData, chief: bool):
        import tensorflow as tf

        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_dir = os.path.join(
            config.log_dir, f"{os.path.basename(os.path.abspath(config.save_dir))}-{stamp}"
        )
        try:
            if chief:
                os.makedirs(self.log_dir, exist_ok=True)  # an OSError says why in a few words
            self.writer = (
                tf.summary.create_file_writer(self.log_dir)
                if chief
                else tf.summary.create_noop_writer()
            )
        except (OSError, tf.errors.OpError) as e:
            reason = e.strerror if isinstance(e, OSError) else e.message.splitlines()[0][:200]
            raise StorageError(
                f"could not write TensorBoard logs to {self.log_dir} ({reason}); "
                "pass a writable --log_dir"
            ) from None
        self.chief, self.training, self.sampler = chief, training, None

    def scalar(self, name: str, value: float, step: int) -> None:
        import tensorflow as tf

        with self.writer.as_default():
            tf.summary.scalar(name, value, step=step)

    def sample(self, model, step: int) -> None:
        import tensorflow as tf

        from kerasgen.sampling import Sampler, SamplingOptions

        if not self.chief:
            return
        if self.sampler is None:
            self.sampler = Sampler(
                build_model(self.training.model_config, 1),
                self.training.vocab,
                self.training.preamble,
            )
        self.sampler.model.set_weights(model.get_weights())
        text = self.sampler.generate(TENSORBOARD_SAMPLE_CHARS, "", SamplingOptions(seed=0))[0]
        with self.writer.as_default():
            tf.summary.text("sample", text, step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# ---------------------------------------------------------------- the loop


def run_training(
    config: TrainConfig,
    model_options: dict | None = None,
    init_from: str | None = None,
    callbacks=(),
    overwrite: bool = False,
    text: str | None = None,
) -> TrainResult:
    """Train on ``config.data_dir`` into ``config.save_dir``.

    ``model_options``: ModelConfig fields other than ``vocab_size`` (taken from
    the data). ``init_from``: continue a saved run (weights, optimizer state,
    counters, schedule). A trained run in ``save_dir`` is never replaced
    unless ``overwrite`` (continuing it in place is not replacing it), and then
    only once the new run has saved a checkpoint. ``text``: the training text,
    written to ``config.data_dir`` first (``kerasgen.train(text=...)``).
    Raises Interrupted (after saving) on Ctrl-C or SIGTERM, DivergedError on
    a non-finite loss (nothing saved after it).
    """
    import keras

    from kerasgen import distribute

    budget = Budget(config.time_budget, 0)  # the budget counts data preparation too
    # First: a multi-worker strategy must exist before TensorFlow starts its runtime.
    strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    precision = contextlib.nullcontext()
    if config.mixed_precision:
        precision = _precision_policy(keras, "mixed_float16")
    lock = rundir.RunLock(config.save_dir) if chief else contextlib.nullcontext()
    model_options = dict(model_options or {})
    if model_options.get("model") == "transformer":
        model_options.setdefault("context", config.seq_length)  # it sees one training window
    with precision, lock, StopSignals() as signals:
        run, replacing = _claim_run_folder(config, init_from, overwrite, chief)
        # A run being replaced is set aside only once the new one's data and model are
        # ready (a text given as a string is part of the run, so it goes aside first),
        # and put back unless the new run saves a checkpoint (rundir.Replacement).
        replacement = board = None
        try:
            if text is not None:
                if replacing:
                    replacement = rundir.Replacement.begin(config.save_dir)
                _write_text(config.data_dir, text)
            training = prepare_data(config, model_options, run, _data_progress(callbacks))
            distributed = (
                strategy.num_replicas_in_sync > 1 or not chief or config.strategy == "multiworker"
            )
            trainee = Trainee(config, training, strategy, distributed, init_from)
            board = TensorBoardLog(config, training, chief)
            if replacing and replacement is None:
                replacement = rundir.Replacement.begin(config.save_dir)
            if chief:
                rundir.write_run(
                    config.save_dir,
                    training.model_config,
                    dataclasses.asdict(config),
                    training.vocab,
                    training.preamble,
                )
                if (
                    run is not None
                    and not _same_folder(init_from, config.save_dir)
                    and run.has_checkpoint("best")
                ):
                    rundir.copy_checkpoint(init_from, config.save_dir, "best")
            budget.val_steps = 0 if training.val is None else len(training.val)
            return _loop(
                config,
                training,
                trainee,
                budget,
                signals,
                callbacks,
                chief,
                distributed,
                board,
                replacement,
            )
        except BaseException:
            if replacement is not None:
                replacement.restore()  # nothing when the new run saved a checkpoint
            raise
        finally:
            if board is not None:
                board.close()


def _write_text(folder: str, text: str) -> None:
    from kerasgen import atomic

    try:
        atomic.write_text(os.path.join(folder, data.INPUT_NAME), text)
    except OSError as e:
        raise StorageError(
            f"could not write the training text into {folder} "
            f"({e.strerror or e}); pass a writable save_dir"
        ) from None


@contextlib.contextmanager
def _precision_policy(keras, policy: str):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _data_progress(callbacks):
    """Reading the text, reported to the callbacks that have ``on_data_progress``."""
    listeners = [cb for cb in callbacks if hasattr(cb, "on_data_progress")]

    def progress(done: int, total: int, stage: str) -> None:
        for cb in listeners:
            cb.on_data_progress(done, total, stage)

    return progress if listeners else None


def _same_folder(a: str | None, b: str) -> bool:
    return a is not None and os.path.abspath(a) == os.path.abspath(b)


def _claim_run_folder(
    config: TrainConfig, init_from: str | None, overwrite: bool, chief: bool
) -> tuple[rundir.Run | None, bool]:
    """Check what ``save_dir`` and ``init_from`` hold: (the run to continue, if any;
    whether a trained run in ``save_dir`` is to be replaced). Nothing is removed here."""
    save_dir = config.save_dir
    replacing = False
    if chief:
        rundir.remove_leftovers(save_dir)  # of a write that a kill interrupted
        rundir.Replacement.recover(save_dir)  # of a replacement that a kill interrupted
        if rundir.has_trained_model(save_dir) and not _same_folder(init_from, save_dir):
            if not overwrite:
                hint = (
                    f"continue it with --init_from {save_dir}"
                    if init_from is None
                    else f"continue {init_from} in place with --save_dir {init_from}"
                )
                raise ValueError(
                    f"{save_dir} already holds a trained model; {hint}, pick "
                    "another --save_dir, or pass --overwrite to replace it"
                )
            replacing = True
    if init_from is None:
        return None, replacing
    run = rundir.read_run(init_from)
    if not run.has_checkpoint("latest"):
        raise ValueError(f"--init_from {init_from} has no latest checkpoint to continue from")
    if run.vocab.level != config.level:
        raise ValueError(
            f"--init_from {init_from} was trained with --level "
            f"{run.vocab.level}; pass --level {run.vocab.level}"
        )
    return run, replacing


def _loop(
    config: TrainConfig,
    training: TrainingData,
    trainee: Trainee,
    budget: Budget,
    signals: StopSignals,
    callbacks,
    chief: bool,
    distributed: bool,
    board: TensorBoardLog,
    replacement: rundir.Replacement | None,
) -> TrainResult:
    """Epochs until ``num_epochs`` or the budget; a stop signal saves, then raises."""
    import tensorflow as tf

    epochs = _Epochs(config, training, trainee, budget, callbacks, chief, board, replacement)
    try:
        while epochs.epoch < config.num_epochs and not budget.spent:
            epochs.train_epoch(signals)
            epochs.end_epoch()
    except (_Stop, KeyboardInterrupt):
        saved = epochs.checkpoints.save("latest") if epochs.trained_steps else None
        raise Interrupted(saved, epochs.step, signals.received or signal.SIGINT) from None
    except tf.errors.OpError as e:
        if not distributed:
            raise
        # A worker died or stopped answering; the last checkpoint is intact.
        what = (
            "a worker died or stopped answering"
            if isinstance(
                e,
                (
                    tf.errors.UnavailableError,
                    tf.errors.DeadlineExceededError,
                    tf.errors.CancelledError,
                    tf.errors.AbortedError,
                ),
            )
            else str(e).strip().splitlines()[0][:200]
        )
        raise DistributedError(
            f"distributed training failed at step {epochs.step} ({type(e).__name__}: {what}); "
            f"the latest checkpoint in {config.save_dir} is intact: continue with --init_from "
            f"{config.save_dir}"
        ) from None
    return epochs.finish()


class _Epochs:
    """The training loop's counters and its two halves: an epoch's steps, and the epoch's
    end (validation, the best checkpoint, logs, progress)."""

    def __init__(
        self,
        config: TrainConfig,
        training: TrainingData,
        trainee: Trainee,
        budget: Budget,
        callbacks,
        chief: bool,
        board: TensorBoardLog,
        replacement: rundir.Replacement | None,
    ):
        import keras

        self.config, self.training, self.trainee, self.budget = config, training, trainee, budget
        self.checkpoints = Checkpointer(config.save_dir, trainee, chief, replacement)
        self.board = board
        self.callbacks = keras.callbacks.CallbackList(list(callbacks), model=trainee.model)
        self.state = trainee.state
        self.steps_per_epoch = len(training.train)
        self.total_steps = self.steps_per_epoch * config.num_epochs
        # Characters per step (at word level: tokens times the mean token length).
        self.chars_per_step = config.batch_size * config.seq_length * training.chars_per_token
        self.step, self.epoch = self.state["step"], self.state["epoch"]
        self.lr = learning_rate_at(config, self.epoch, self.step, 0.0)
        self.train_loss = self.val_loss = math.nan
        self.losses, self.epoch_seconds, self.paused = [], 0.0, 0.0
        self.trained_steps, self.train_seconds, self.boundary_seconds = 0, 0.0, 0.0
        self.callbacks.on_train_begin(
            {
                "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch,
                "step": self.step,
                "epoch": self.epoch,
                "num_epochs": config.num_epochs,
                "params": count_params(trainee.model),
                "log_dir": self.board.log_dir,
                "notes": training.notes,
            }
        )
        budget.start_loop()

    def train_epoch(self, signals: StopSignals) -> None:
        """The steps of one epoch (from where a resumed run stopped), until its end, the
        budget's, or a stop signal (``_Stop``). A non-finite loss raises DivergedError."""
        config, state, trainee = self.config, self.state, self.trainee
        trainee.steps.reset()
        self.losses, self.paused, started = [], 0.0, time.perf_counter()
        order = None
        if not trainee.recurrent:
            # No state to carry, so the windows can go anywhere: shuffled across rows
            # and steps, a fresh order each epoch, and the same one again on resume.
            order = np.random.default_rng([self.epoch, config.seed or 0]).permutation(
                self.training.train.windows
            )
        batches = self.training.train.dataset(start=state["batch"], order=order)
        for x, y in batches:
            if signals.received is not None:
                raise _Stop
            progress = self.budget.progress()
            self.lr = learning_rate_at(
                config,
                self.epoch,
                self.step,
                self.step / self.total_steps if progress is None else progress,
            )
            trainee.optimizer.learning_rate.assign(self.lr)
            loss = trainee.steps.train(x, y)
            if not math.isfinite(loss):
                raise DivergedError(
                    f"training diverged at step {self.step + 1}: the loss became {loss} "
                    f"(learning rate {self.lr:.3g}); nothing was saved after it; try a lower "
                    "--learning_rate (or --grad_clip)"
                )
            self.step += 1
            self.trained_steps += 1
            state.update(step=self.step, batch=state["batch"] + 1)
            self.train_loss = loss
            self.losses.append(loss)
            self.board.scalar("loss/train", loss, self.step)
            elapsed = time.perf_counter() - started - self.paused
            self.callbacks.on_train_batch_end(
                self.step,
                {
                    "loss": loss,
                    "epoch": self.epoch + 1,
                    "batch": state["batch"],
                    "steps_per_epoch": self.steps_per_epoch,
                    "chars_per_s": len(self.losses) * self.chars_per_step / max(elapsed, 1e-9),
                },
            )
            if config.eval_every and self.step % config.eval_every == 0:
                self.evaluate_now()
            elif config.save_every and self.step % config.save_every == 0:
                self.checkpoints.save("latest")
            if signals.received is not None:
                raise _Stop
            if self.budget.after_step():
                break
        self.epoch_seconds = time.perf_counter() - started - self.paused  # in training steps

    def end_epoch(self) -> None:
        """Validate, keep the best checkpoint, save the latest, log, report."""
        state, seconds = self.state, self.epoch_seconds
        self.train_seconds += seconds
        state.update(
            train_seconds=state.get("train_seconds", 0.0) + seconds,
            train_chars=round(state.get("train_chars", 0) + len(self.losses) * self.chars_per_step),
        )
        chars_per_s = len(self.losses) * self.chars_per_step / max(seconds, 1e-9)
        started = time.perf_counter()
        if state["batch"] >= self.steps_per_epoch:  # else the budget ended it part-way
            self.epoch += 1
            state.update(epoch=self.epoch, batch=0)
        improved, val_seconds = self.validate_and_save()
        self.board.scalar("learning_rate", self.lr, self.step)
        self.board.scalar("chars_per_s", chars_per_s, self.step)
        self.board.sample(self.trainee.model, self.step)
        boundary = time.perf_counter() - started
        self.boundary_seconds += boundary
        self.budget.after_boundary(boundary)
        self.callbacks.on_epoch_end(
            self.epoch,
            {
                "loss": float(np.mean(self.losses)) if self.losses else self.train_loss,
                "val_loss": self.val_loss,
                "chars_per_s": chars_per_s,
                "step": self.step,
                "seconds": seconds,
                "best": improved,
                "val_seconds": val_seconds,
                "boundary_seconds": boundary,
                "epochs_done": self.epoch + state["batch"] / self.steps_per_epoch,
                "partial_steps": state["batch"],
            },
        )  # > 0: the budget ended an epoch early

    def validate_and_save(self) -> tuple[bool, float]:
        """Score the held-out subset, save the latest checkpoint and, if it is the best
        so far, the best; return (improved, seconds spent validating)."""
        state, started = self.state, time.perf_counter()
        self.val_loss = None
        if self.training.val is not None:
            self.val_loss = self.trainee.steps.evaluate_batches(self.training.val.dataset())
            self.board.scalar("loss/val", self.val_loss, self.step)
        val_seconds = time.perf_counter() - started
        state.update(val_loss=self.val_loss, train_loss=self.train_loss)
        improved = self.val_loss is not None and (
            state["best_val_loss"] is None or self.val_loss < state["best_val_loss"]
        )
        if improved:
            state["best_val_loss"] = self.val_loss
        self.checkpoints.save("latest")
        if improved:
            self.checkpoints.save("best")
        return improved, val_seconds

    def evaluate_now(self) -> None:
        """A validation within an epoch (--eval_every), reported as Keras's on_test_end."""
        started = time.perf_counter()
        self.callbacks.on_test_begin({"step": self.step})
        improved, val_seconds = self.validate_and_save()
        seconds = time.perf_counter() - started
        self.paused += seconds
        self.budget.after_boundary(seconds)
        self.boundary_seconds += seconds
        self.callbacks.on_test_end(
            {
                "val_loss": self.val_loss,
                "step": self.step,
                "best": improved,
                "val_seconds": val_seconds,
            }
        )

    def finish(self) -> TrainResult:
        chars_per_s = (
            self.trained_steps * self.chars_per_step / self.train_seconds
            if self.train_seconds
            else 0.0
        )
        result = TrainResult(
            steps=self.step,
            epochs=self.epoch,
            stopped_by_budget=self.budget.spent,
            train_loss=self.train_loss,
            val_loss=self.val_loss,
            best_val_loss=self.state["best_val_loss"],
            chars_per_s=chars_per_s,
            seconds=time.perf_counter() - self.budget.started,
            boundary_seconds=self.boundary_seconds,
            save_dir=self.config.save_dir,
            log_dir=self.board.log_dir,
            notes=self.training.notes,
        )
        self.callbacks.on_train_end(dataclasses.asdict(result))
        return result


class _Stop(Exception):
    """A stop signal arrived: leave the loop and save."""


# ---------------------------------------------------------------- the public entry

MODEL_OPTIONS = (
    "model",
    "rnn_size",
    "num_layers",
    "input_keep_prob",
    "output_keep_prob",
    "n_head",
    "dropout",
)
TRAIN_OPTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# What --init_from does not take over from the saved run: where it is written, and how
# this machine computes (the run may continue on other hardware).
NOT_RESUMED = ("save_dir", "strategy", "fused", "jit_compile", "mixed_precision")


def resolve_options(options: dict, init_from: str | None = None) -> tuple[TrainConfig, dict]:
    """``TrainConfig`` and the model options from options named as the CLI's flags.

    Each setting is, first match wins: given in ``options``; in the preset
    ``options["preset"]`` names (``kerasgen.presets``); recorded by the run
    being continued (``init_from``: its data folder, epochs, learning rate,
    model shape...); the default. A transformer's context is its ``seq_length``.
    """
    options = _spelled(options)
    preset = options.pop("preset", None)
    if preset is not None:
        from kerasgen.presets import load_preset

        options = {**_spelled(load_preset(preset)), **options, "preset": preset}
    unknown = sorted(set(options) - set(MODEL_OPTIONS) - set(TRAIN_OPTIONS))
    if unknown:
        where = f"preset {preset} has" if preset is not None else "there is"
        raise ValueError(
            f"{where} unknown option {', '.join(unknown)}; options are kerasgen "
            f"train's flags: {', '.join(sorted(MODEL_OPTIONS + TRAIN_OPTIONS))}"
        )
    if isinstance(options.get("time_budget"), str):
        options["time_budget"] = parse_duration(options["time_budget"])
    _check_applicable(options, init_from)
    if init_from is not None:
        run = rundir.read_run(init_from)
        recorded = {
            **{
                k: v
                for k, v in run.train_config.items()
                if k in TRAIN_OPTIONS and k not in NOT_RESUMED
            },
            **{k: v for k, v in run.model_config.to_dict().items() if k in MODEL_OPTIONS},
            "level": run.vocab.level,
        }
        if run.model_config.model == "transformer":
            recorded["seq_length"] = run.model_config.context
        options = {**recorded, **options}
        options.setdefault("save_dir", init_from)  # continue in place unless told otherwise
    model_options = {k: options.pop(k) for k in MODEL_OPTIONS if k in options}
    if model_options.get("model") == "transformer":
        model_options["context"] = options.get("seq_length", TrainConfig.seq_length)
    return TrainConfig(**options), model_options


def _spelled(options: dict) -> dict:
    """A copy of ``options`` with ``n_embd`` (a transformer's name) spelled ``rnn_size``."""
    options = dict(options)
    if "n_embd" in options:
        options.setdefault("rnn_size", options.pop("n_embd"))
    return options


VOCAB_OPTIONS = {"max_vocab": "word", "vocab_size": "bpe"}  # each with the level it sizes


def _check_applicable(options: dict, init_from: str | None) -> None:
    """Refuse given options that the model or level they would go with ignores."""
    model, level = options.get("model"), options.get("level")
    if init_from is not None and (model is None or level is None):
        run = rundir.read_run(init_from)
        model, level = model or run.model_config.model, level or run.vocab.level
    if "n_head" in options and (model or "lstm") != "transformer":
        raise ValueError("--n_head applies to --model transformer only")
    for name, applies in VOCAB_OPTIONS.items():
        if name in options and (level or "char") != applies:
            raise ValueError(f"--{name} applies to --level {applies} only")
    if init_from is not None:  # the run keeps its vocabulary, and the size it was made with
        recorded = rundir.read_run(init_from).train_config
        for name in VOCAB_OPTIONS:
            if name in options and recorded.get(name, options[name]) != options[name]:
                raise ValueError(
                    f"--init_from {init_from} keeps its vocabulary (--{name} "
                    f"{recorded[name]}); drop --{name} or train into a new "
                    "--save_dir"
                )


def train(
    data_dir: str | None = None,
    *,
    text: str | None = None,
    save_dir: str | None = None,
    init_from: str | None = None,
    overwrite: bool = False,
    callbacks=None,
    verbose: bool = True,
    **options,
):
    """Train a model and return it, loaded (as ``kerasgen.load`` returns it).

    ``data_dir``: a folder with ``input.txt`` (default: tiny Shakespeare); or
    ``text``: the training text itself, kept in the run folder. ``save_dir``:
    the run folder (default ``save``, or the ``init_from`` run, continued in
    place). ``options``: ``kerasgen train``'s flags by name (``rnn_size=256``,
    ``num_epochs=10``, ``time_budget="10m"``...); ``preset="python-20min"``
    starts from a shipped preset (``kerasgen.presets``): the other options
    override it, and it overrides what ``init_from`` recorded. Run folder,
    checkpoints and TensorBoard logs are the CLI's. ``callbacks``: Keras callbacks that get the
    progress; by default a progress bar, none with ``verbose=False``.
    Returns None on the workers of a multi-worker run that do not write the folder.
    """
    from kerasgen.run import load

    if data_dir is not None and text is not None:
        raise ValueError("pass data_dir or text, not both")
    if data_dir is not None:
        options["data_dir"] = data_dir
    if save_dir is not None:
        options["save_dir"] = save_dir
    config, model_options = resolve_options(options, init_from)
    if text is not None:
        if not text:
            raise ValueError("text is empty; give some text to train on")
        if (
            rundir.has_trained_model(config.save_dir)
            and not overwrite
            and not _same_folder(init_from, config.save_dir)
        ):
            raise ValueError(
                f"{config.save_dir} already holds a trained model; pick another "
                "save_dir or pass overwrite=True"
            )
        config = dataclasses.replace(config, data_dir=rundir.text_dir(config.save_dir))
    if callbacks is None:
        from kerasgen.progress import training_progress

        callbacks = [training_progress()] if verbose else []
    result = run_training(config, model_options, init_from, callbacks, overwrite, text)
    return load(result.save_dir) if rundir.has_trained_model(result.save_dir) else None
