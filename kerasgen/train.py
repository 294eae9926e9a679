"""The training loop: stateful streams, per-epoch lr decay, checkpoints, TensorBoard.

A hand-written loop around one compiled ``train_step`` rather than
``Model.fit``: it keeps the stream layout in order, resets the recurrent
state exactly where char-rnn does (every epoch start and before validation),
checkpoints every ``save_every`` steps and on Ctrl-C, resumes mid-epoch, and
avoids ``fit``'s per-epoch set-up cost. Progress goes to Keras callbacks
(``on_train_begin``, ``on_train_batch_end``, ``on_epoch_end``, ``on_train_end``);
the library itself prints nothing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from kerasgen import atomic, data, rundir
from kerasgen.errors import DistributedError
from kerasgen.model import (RNN_FAMILIES, ModelConfig, build_model, count_params, reset_states,
                            rnn_layers)
from kerasgen.vocab import BYTES, DEFAULT_MAX_VOCAB, DEFAULT_VOCAB_SIZE, LEVELS

TENSORBOARD_SAMPLE_CHARS = 300  # length of the text sample logged at each epoch end
LINE_START = "\n"  # the token sampling starts with: a zero state reads it first


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

    def __post_init__(self):
        for name in ("seq_length", "batch_size", "num_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.save_every < 0:
            raise ValueError(f"--save_every must be >= 0 (0: only at epoch ends), "
                             f"got {self.save_every}")
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
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown --lr_schedule {self.lr_schedule!r}; choose one of "
                             + ", ".join(LR_SCHEDULES))
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.level not in LEVELS:
            raise ValueError(f"unknown --level {self.level!r}; choose one of " + ", ".join(LEVELS))
        if self.max_vocab < 1:
            raise ValueError(f"--max_vocab must be at least 1, got {self.max_vocab}")
        if self.vocab_size < BYTES:
            raise ValueError(f"--vocab_size must be at least {BYTES} (one token per byte), "
                             f"got {self.vocab_size}")
        if self.mixed_precision and self.strategy in ("mirrored", "multiworker"):
            raise ValueError("--mixed_precision runs on one device for now; drop it or use "
                             "--strategy default")


LR_SCHEDULES = ("epoch", "cosine")
COSINE_FLOOR = 0.1  # the cosine schedule ends at this fraction of --learning_rate
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


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
        return config.learning_rate * config.decay_rate ** epoch
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


class Interrupted(Exception):
    """Training stopped by Ctrl-C after the latest checkpoint was saved."""

    def __init__(self, checkpoint: str, step: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint
        self.step = step


def _check_resumable(run: rundir.Run, model_config: ModelConfig, vocab):
    """Refuse an ``--init_from`` run that does not fit; return data-id -> run-id mapping.

    ``vocab`` None (word and bpe levels: the text is encoded with the run's vocabulary)
    checks the model only.
    """
    diffs = run.model_config.differences(model_config)
    diffs = [d.replace("context:", "context (--seq_length):") for d in diffs
             if not d.startswith("vocab_size")]
    if diffs:
        raise ValueError(f"--init_from {run.save_dir} has a different model ("
                         + "; ".join(f"saved {d.replace(' != ', ', requested ')}" for d in diffs)
                         + "); drop the differing flags or train into a new --save_dir")
    if vocab is None:
        return None
    missing = [c for c in vocab.chars if c not in run.vocab.index]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:20])
        raise ValueError(f"--init_from {run.save_dir} has a different vocabulary: the text has "
                         f"characters the model never saw ({shown}); train a new model instead")
    return np.array([run.vocab.index[c] for c in vocab.chars], dtype=np.int64)


def train(config: TrainConfig, model_options: dict | None = None, init_from: str | None = None,
          callbacks=(), overwrite: bool = False) -> TrainResult:
    """Train a model on ``config.data_dir`` into ``config.save_dir``.

    ``model_options`` are ModelConfig fields other than ``vocab_size`` (taken from
    the data). ``init_from`` continues a saved run: weights, optimizer state,
    step/epoch counters and the lr schedule pick up where it stopped, with the
    run's own vocabulary (``max_vocab`` and ``vocab_size`` are not used).
    Raises Interrupted (after saving) on Ctrl-C.
    """
    import keras

    from kerasgen import distribute

    # First: a multi-worker strategy must exist before TensorFlow starts its runtime.
    strategy = distribute.make_strategy(config.strategy)
    if config.mixed_precision:
        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            return _train(config, model_options, init_from, callbacks, overwrite, strategy)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
    return _train(config, model_options, init_from, callbacks, overwrite, strategy)


def _train(config, model_options, init_from, callbacks, overwrite, strategy) -> TrainResult:
    import keras
    import tensorflow as tf

    from kerasgen import distribute

    save_dir = config.save_dir
    # Only the chief writes (and checks) the run folder; other workers of a
    # multi-worker run keep nothing.
    chief = distribute.is_chief(strategy)
    distributed = strategy.num_replicas_in_sync > 1 or not chief or \
        config.strategy == "multiworker"
    if chief and init_from is None and not overwrite and any(
            os.path.isfile(rundir.checkpoint_path(save_dir, w)) for w in rundir.CHECKPOINTS):
        raise ValueError(f"{save_dir} already holds a trained model; continue it with "
                         f"--init_from {save_dir}, or pick another --save_dir")
    model_options = dict(model_options or {})
    if model_options.get("model") == "transformer":
        model_options["context"] = config.seq_length  # it sees one training window at once
    run = None
    if init_from is not None:
        run = rundir.read_run(init_from)
        if not run.has_checkpoint("latest"):
            raise ValueError(f"--init_from {init_from} has no latest checkpoint to continue from")
        if run.vocab.level != config.level:
            raise ValueError(f"--init_from {init_from} was trained with --level "
                             f"{run.vocab.level}; pass --level {run.vocab.level}")
    chars_per_token = 1.0
    if config.level != "char":
        vocab, train_ids, val_ids, train_chars = data.load_token_splits(
            config.data_dir, config.encoding, config.val_frac, config.level, config.max_vocab,
            config.vocab_size, vocab=None if run is None else run.vocab)
        chars_per_token = train_chars / max(len(train_ids), 1)
        model_config = ModelConfig(vocab_size=len(vocab), **model_options)
        if run is not None:
            _check_resumable(run, model_config, None)
            model_config = run.model_config
    else:
        vocab, ids = data.load_corpus(config.data_dir, config.encoding)
        model_config = ModelConfig(vocab_size=len(vocab), **model_options)
        if run is not None:
            ids = _check_resumable(run, model_config, vocab)[ids]
            vocab, model_config = run.vocab, run.model_config
        train_ids, val_ids = data.split(ids, config.val_frac)
    recurrent = model_config.model in RNN_FAMILIES
    fused = config.fused
    if fused is None:
        fused = distributed or not tf.config.list_physical_devices("GPU")
    if not recurrent:
        if distributed:
            raise ValueError(f"--model {model_config.model} trains on one device; drop "
                             "--strategy")
        fused = False  # the fast path computes recurrent layers only
    if distributed and not fused:
        raise ValueError("--no_fused works on one device only; drop it to train with "
                         f"--strategy {config.strategy}")

    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    x_train, y_train = data.stream_batches(train_ids, config.batch_size, config.seq_length,
                                           what="training text")
    x_val = y_val = None
    if config.val_frac > 0:
        try:
            x_val, y_val = data.stream_batches(val_ids, config.batch_size, config.seq_length,
                                               what="validation text")
        except ValueError as e:
            raise ValueError(f"{e}; or raise --val_frac, or pass --val_frac 0 to skip "
                             "validation") from None
    steps_per_epoch = len(x_train)
    total_steps = steps_per_epoch * config.num_epochs
    # Characters per step (at word and bpe levels: tokens times the mean token length).
    chars_per_step = config.batch_size * config.seq_length * chars_per_token

    with strategy.scope():
        # Under a strategy each replica runs its share of the streams.
        model = build_model(model_config, distribute.replica_batch(config.batch_size, strategy))
        optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate,
                                          global_clipnorm=config.grad_clip)
        if config.mixed_precision:  # scales the loss so float16 gradients do not underflow
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        # train_seconds / train_chars: time in training steps and characters
        # trained, over every run that continued this one (for kerasgen compare).
        state = {"step": 0, "epoch": 0, "batch": 0, "best_val_loss": None,
                 "train_seconds": 0.0, "train_chars": 0}
        if run is not None:
            state.update(rundir.load_checkpoint(init_from, "latest", model, optimizer))
            if state["batch"] >= steps_per_epoch:  # the text shrank: start a fresh epoch
                state["epoch"], state["batch"] = state["epoch"] + 1, 0
        # Streams that reach a line start at a batch start begin it from a zero
        # state: the state sampling starts in (see start_rows).
        line_start_id = vocab.token_id(LINE_START)
        if distributed:
            steps = distribute.DistributedSteps(strategy, model, optimizer, config.batch_size,
                                                config.jit_compile, line_start_id)
        else:
            steps = _SingleDeviceSteps(model, optimizer, fused=fused and not
                                       config.mixed_precision, jit_compile=config.jit_compile,
                                       line_start_id=line_start_id)

    # Samples start from a zero state that reads a newline, as trained.
    preamble = LINE_START if line_start_id is not None else ""
    if chief:
        rundir.write_run(save_dir, model_config, dataclasses.asdict(config), vocab, preamble)
    if chief and run is not None and os.path.abspath(init_from) != os.path.abspath(save_dir) \
            and run.has_checkpoint("best"):
        with atomic.atomic_path(rundir.checkpoint_path(save_dir, "best"), suffix=".h5") as tmp:
            shutil.copyfile(rundir.checkpoint_path(init_from, "best"), tmp)

    def validate() -> float:
        return steps.evaluate_batches(data.make_dataset(x_val, y_val))

    log_dir = os.path.join(config.log_dir, f"{os.path.basename(os.path.abspath(save_dir))}-"
                                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    writer = tf.summary.create_file_writer(log_dir) if chief else tf.summary.create_noop_writer()
    sampler = _EpochSampler(model_config, vocab, preamble)
    cbs = keras.callbacks.CallbackList(list(callbacks), model=model)

    def save(which: str) -> str:
        if not chief:
            return rundir.checkpoint_path(save_dir, which) + " (by the chief)"
        return rundir.save_checkpoint(save_dir, which, model,
                                      optimizer if which == "latest" else None, dict(state))

    step, epoch = state["step"], state["epoch"]
    train_loss = val_loss = math.nan
    started = time.perf_counter()
    deadline = None if config.time_budget is None else started + config.time_budget
    # Seconds kept back from the budget for the final validation and checkpoints:
    # the last epoch boundary's duration once one has been measured.
    reserve = None
    budget_spent = False
    first_step, first_step_seconds = step, 0.0
    train_seconds, trained_steps, total_boundary_seconds = 0.0, 0, 0.0
    val_steps = 0 if x_val is None else len(x_val)

    def progress() -> float:
        if deadline is not None:
            return (time.perf_counter() - started) / config.time_budget
        return step / total_steps

    lr = learning_rate_at(config, epoch, step, 0.0)
    cbs.on_train_begin({"total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                        "step": step, "epoch": epoch, "num_epochs": config.num_epochs,
                        "params": count_params(model),
                        "log_dir": log_dir})
    # Ctrl-C only raises a flag that the loop checks between steps, so the
    # interrupt never lands inside TensorFlow or a half-done step; a second
    # Ctrl-C interrupts at once.
    stop_requested = []

    def on_sigint(signum, frame):
        if stop_requested:
            raise KeyboardInterrupt
        stop_requested.append(signum)

    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        with writer.as_default():
            while epoch < config.num_epochs and not budget_spent:
                steps.reset()
                epoch_losses, epoch_start = [], time.perf_counter()
                x_epoch, y_epoch = x_train, y_train
                if not recurrent:
                    # No state to carry, so the windows can go anywhere: shuffled
                    # across rows and steps, a fresh order each epoch and the same
                    # one again on resume.
                    order = np.random.default_rng([epoch, config.seed or 0]).permutation(
                        x_train.shape[0] * x_train.shape[1])
                    x_epoch, y_epoch = (a.reshape(-1, a.shape[2])[order].reshape(a.shape)
                                        for a in (x_train, y_train))
                for x, y in data.make_dataset(x_epoch, y_epoch, start=state["batch"]):
                    lr = learning_rate_at(config, epoch, step, progress())
                    optimizer.learning_rate.assign(lr)
                    train_loss = steps.train(x, y)
                    step += 1
                    state.update(step=step, batch=state["batch"] + 1)
                    epoch_losses.append(train_loss)
                    tf.summary.scalar("loss/train", train_loss, step=step)
                    elapsed = time.perf_counter() - epoch_start
                    cbs.on_train_batch_end(step, {
                        "loss": train_loss, "epoch": epoch + 1,
                        "chars_per_s": len(epoch_losses) * chars_per_step / max(elapsed, 1e-9)})
                    if config.save_every and step % config.save_every == 0:
                        save("latest")
                    if stop_requested:
                        raise KeyboardInterrupt
                    if deadline is not None:
                        if step - first_step == 1:
                            first_step_seconds = time.perf_counter() - started  # compiles
                        elif reserve is None:
                            # Before any boundary: an eval step costs about a third of a
                            # training step, and compiling it about half the first step.
                            seconds_per_step = ((time.perf_counter() - started - first_step_seconds)
                                                / (step - first_step - 1))
                            reserve = (1.0 + first_step_seconds / 2
                                       + val_steps * seconds_per_step / 3)
                        if reserve is not None and time.perf_counter() + reserve >= deadline:
                            budget_spent = True
                            break
                epoch_seconds = time.perf_counter() - epoch_start
                train_seconds += epoch_seconds
                state.update(train_seconds=state.get("train_seconds", 0.0) + epoch_seconds,
                             train_chars=round(state.get("train_chars", 0)
                                               + len(epoch_losses) * chars_per_step))
                trained_steps += len(epoch_losses)
                chars_per_s = len(epoch_losses) * chars_per_step / max(epoch_seconds, 1e-9)
                boundary_start = time.perf_counter()
                val_loss = validate() if x_val is not None else None
                val_seconds = time.perf_counter() - boundary_start
                if state["batch"] >= steps_per_epoch:  # else the budget ended it part-way
                    epoch += 1
                    state.update(epoch=epoch, batch=0)
                state.update(val_loss=val_loss, train_loss=train_loss)
                improved = val_loss is not None and (state["best_val_loss"] is None
                                                     or val_loss < state["best_val_loss"])
                if improved:
                    state["best_val_loss"] = val_loss
                save("latest")
                if improved:
                    save("best")
                tf.summary.scalar("learning_rate", lr, step=step)
                tf.summary.scalar("chars_per_s", chars_per_s, step=step)
                if val_loss is not None:
                    tf.summary.scalar("loss/val", val_loss, step=step)
                if chief:
                    tf.summary.text("sample", sampler.sample(model), step=step)
                writer.flush()
                # Everything between two epochs' training: validation, checkpoints,
                # the TensorBoard sample and the state reset.
                boundary_seconds = time.perf_counter() - boundary_start
                total_boundary_seconds += boundary_seconds
                reserve = boundary_seconds
                cbs.on_epoch_end(epoch, {
                    "loss": float(np.mean(epoch_losses)) if epoch_losses else train_loss,
                    "val_loss": val_loss, "chars_per_s": chars_per_s, "step": step,
                    "seconds": epoch_seconds, "best": improved, "val_seconds": val_seconds,
                    "boundary_seconds": boundary_seconds,
                    "epochs_done": epoch + state["batch"] / steps_per_epoch,
                    "partial_steps": state["batch"]})  # > 0: the budget ended an epoch early
    except KeyboardInterrupt:
        raise Interrupted(save("latest"), step) from None
    except tf.errors.OpError as e:
        if not distributed:
            raise
        # A worker died or stopped answering; the last checkpoint is intact.
        what = ("a worker died or stopped answering"
                if isinstance(e, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                                  tf.errors.CancelledError, tf.errors.AbortedError))
                else str(e).strip().splitlines()[0][:200])
        raise DistributedError(
            f"distributed training failed at step {step} ({type(e).__name__}: {what}); the "
            f"latest checkpoint in {save_dir} is intact: continue with --init_from "
            f"{save_dir}") from None
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        writer.close()
    result = TrainResult(
        steps=step, epochs=epoch, stopped_by_budget=budget_spent, train_loss=train_loss, val_loss=val_loss,
        best_val_loss=state["best_val_loss"],
        chars_per_s=trained_steps * chars_per_step / train_seconds if train_seconds else 0.0,
        seconds=time.perf_counter() - started, boundary_seconds=total_boundary_seconds,
        save_dir=save_dir, log_dir=log_dir)
    cbs.on_train_end(dataclasses.asdict(result))
    return result


def start_rows(states: list, x, line_start_id: int | None) -> list:
    """Zero the state of every row whose batch ``x`` (B, T) begins with ``line_start_id``.

    Sampling starts from a zero state that reads a newline (the run's
    preamble); without this, training would show the model that state only
    at epoch starts, and samples would begin with garbage. ``states``: per
    layer, a list of (B, H) tensors.
    """
    import tensorflow as tf

    if line_start_id is None or not states:
        return states
    keep = tf.cast(x[:, :1] != line_start_id, states[0][0].dtype)  # (B, 1)
    return [[value * keep for value in layer] for layer in states]


class _SingleDeviceSteps:
    """The one-device steps behind the same interface as ``distribute.DistributedSteps``."""

    def __init__(self, model, optimizer, fused: bool, jit_compile: bool,
                 line_start_id: int | None = None):
        self.model = model
        self.train_step, self.eval_step = compile_steps(model, optimizer, fused, jit_compile,
                                                        line_start_id)

    def reset(self) -> None:
        reset_states(self.model)

    def train(self, x, y) -> float:
        return float(self.train_step(x, y))

    def evaluate_batches(self, batches) -> float:
        reset_states(self.model)
        return float(np.mean([float(self.eval_step(x, y)) for x, y in batches]))


def compile_steps(model, optimizer, fused: bool = True, jit_compile: bool = False,
                  line_start_id: int | None = None):
    """The compiled ``train_step(x, y) -> loss`` and ``eval_step(x, y) -> loss``.

    x, y: (B, T) int32 batches; the loss is the mean nats/char. Both carry the
    recurrent state in the model's stateful layers. ``fused`` computes the
    logits with ``kerasgen.fused.FusedModel`` (the same weights and
    mathematics, fewer and larger operations) instead of calling the Keras
    layers. ``line_start_id`` (the newline's id): ``train_step`` starts every
    stream whose batch begins with it from a zero state (``start_rows``).
    """
    import tensorflow as tf

    from kerasgen.fused import FusedModel

    net = FusedModel(model) if fused else None
    layers = rnn_layers(model)
    if fused:

        def logits_and_targets(x, y, training):
            # Time-major all the way to the loss: (T, B, V) logits, (T, B) targets.
            states = net.read_states()
            if training:
                states = start_rows(states, x, line_start_id)
            logits, states = net.forward(tf.transpose(x), states, training)
            return logits, tf.transpose(y), states
    else:
        def logits_and_targets(x, y, training):
            if training and line_start_id is not None:
                for layer, values in zip(layers, start_rows(
                        [[tf.convert_to_tensor(v) for v in layer.states] for layer in layers],
                        x, line_start_id)):
                    for variable, value in zip(layer.states, values):
                        variable.assign(value)
            return model(x, training=training), y, None

    def mean_loss(targets, logits):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))

    variables = model.trainable_variables

    @tf.function(jit_compile=jit_compile, autograph=False)  # no tensor-dependent control flow
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits, targets, states = logits_and_targets(x, y, True)
            loss = mean_loss(targets, tf.cast(logits, tf.float32))
            scaled = optimizer.scale_loss(loss)  # the loss itself unless mixed precision
        optimizer.apply(tape.gradient(scaled, variables), variables)
        if states is not None:
            net.assign_states(states)
        return loss

    @tf.function(jit_compile=jit_compile, autograph=False)  # no tensor-dependent control flow
    def eval_step(x, y):
        logits, targets, states = logits_and_targets(x, y, False)
        if states is not None:
            net.assign_states(states)
        return mean_loss(targets, tf.cast(logits, tf.float32))

    return train_step, eval_step


class _EpochSampler:
    """A batch-1 copy of the model that writes a short text sample to TensorBoard."""

    def __init__(self, model_config: ModelConfig, vocab, preamble: str):
        self.model_config, self.vocab, self.preamble = model_config, vocab, preamble
        self.sampler = None

    def sample(self, model) -> str:
        from kerasgen.sampling import Sampler, SamplingOptions

        if self.sampler is None:
            self.sampler = Sampler(build_model(self.model_config, 1), self.vocab, self.preamble)
        self.sampler.model.set_weights(model.get_weights())
        return self.sampler.generate(TENSORBOARD_SAMPLE_CHARS, "", SamplingOptions(seed=0))[0]
