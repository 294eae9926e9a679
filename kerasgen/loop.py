"""The training loop: epochs of steps, validation, checkpoints, logs, budget and signals.

``run_loop`` runs epochs until ``num_epochs`` or the wall-clock budget, over what
``kerasgen.training`` prepared (``training``: its ``TrainingData``, ``trainee``: its
``Trainee``) and these parts, each with one job:

- ``Budget``: the wall-clock budget: when to stop, and how far the schedule is
- ``StopSignals``: Ctrl-C and SIGTERM raise a flag the loop checks between steps
- ``Checkpointer``: the latest and best checkpoints (only the chief writes)
- ``TensorBoardLog``: scalars and a text sample per epoch
- ``Epochs``: an epoch's steps, and its end (validation, checkpoints, progress)
- progress: Keras callbacks (``kerasgen.progress``)

The loop keeps the streams in order and resets the recurrent state where
char-rnn does (every epoch start, before validation); a stream whose batch
begins at a line start starts from a zero state (``steps.start_rows``).
A non-finite loss stops training at once, before anything is saved.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from kerasgen import rundir
from kerasgen.errors import DistributedError, DivergedError, Interrupted, StorageError
from kerasgen.model import build_model, count_params
from kerasgen.settings import COSINE_FLOOR, TrainConfig

TENSORBOARD_SAMPLE_CHARS = 300  # length of the text sample logged at each epoch end


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
        trainee,
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

    def __init__(self, config: TrainConfig, training, chief: bool):
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
                "pass a writable log_dir"
            ) from None
        self.chief, self.training, self.sampler = chief, training, None

    def scalar(self, name: str, value: float, step: int) -> None:
        import tensorflow as tf

        with self.writer.as_default():
            tf.summary.scalar(name, value, step=step)

    def sample(self, model, step: int) -> None:
        import tensorflow as tf

        from kerasgen.sampler import Sampler
        from kerasgen.sampling import SamplingOptions
        from kerasgen.streams import generate_text

        if not self.chief:
            return
        if self.sampler is None:
            self.sampler = Sampler(
                build_model(self.training.model_config, 1),
                self.training.vocab,
                self.training.preamble,
            )
        self.sampler.model.set_weights(model.get_weights())
        text = generate_text(self.sampler, TENSORBOARD_SAMPLE_CHARS, "", SamplingOptions(seed=0))[0]
        with self.writer.as_default():
            tf.summary.text("sample", text, step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def run_loop(
    config: TrainConfig,
    training,
    trainee,
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

    epochs = Epochs(config, training, trainee, budget, callbacks, chief, board, replacement)
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
            f"the latest checkpoint in {config.save_dir} is intact: continue with init_from "
            f"{config.save_dir}"
        ) from None
    return epochs.finish()


class Epochs:
    """The training loop's counters and its two halves: an epoch's steps, and the epoch's
    end (validation, the best checkpoint, logs, progress)."""

    def __init__(
        self,
        config: TrainConfig,
        training,
        trainee,
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
                    "learning_rate (or grad_clip)"
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
