"""Training progress as users see it: a Keras callback, as ``Model.fit`` shows it.

A live bar (``keras.utils.Progbar``) on a terminal, one line per epoch
otherwise, and a last line with the totals. ``write`` decides where the lines
go: by default standard output, where ``Progbar`` draws its bar (as ``fit``
does); the CLI passes its own.
"""

from __future__ import annotations

import functools
import sys

DATA_PROGRESS_BYTES = 64 << 20  # smaller texts are read too quickly to need a bar


def _stdout_line(line: str) -> None:
    """A line on standard output, flushed, beside the bar ``Progbar`` draws there."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def training_progress(live: bool | None = None, write=None, notes=None):
    """A ``TrainingProgress`` callback; see the module docstring.

    ``live``: a bar (default: when standard output is a terminal). ``write``:
    a function of one line (default: standard output). ``notes``: a function of one
    line for set-up facts (parameters, log folder); default ``write``.
    """
    progress = _progress_class()()
    progress.write = write or _stdout_line
    progress.notes = notes or progress.write
    progress.live = sys.stdout.isatty() if live is None else live
    return progress


@functools.cache  # one class per process; made lazily so importing kerasgen stays light
def _progress_class():
    keras = _keras()
    return type("TrainingProgress", (_Progress, keras.callbacks.Callback), {})


def _keras():
    import keras

    return keras


class _Progress:
    """The methods of ``TrainingProgress`` (a Keras callback, made by ``training_progress``):
    ``write``, ``notes`` and ``live`` are set on it there."""

    data_bar, data_stage = None, None

    def on_data_progress(self, done, total, stage):
        """Reading a big text: a bar per stage (hashing, counting, encoding)."""
        if total < DATA_PROGRESS_BYTES:
            return
        if stage != self.data_stage:
            self.data_stage = stage
            self.notes(f"data: {stage} {total / 1e6:,.0f} MB")
            self.data_bar = _keras().utils.Progbar(total, unit_name="byte") if self.live else None
        if self.data_bar is not None:
            self.data_bar.update(done)

    def on_train_begin(self, logs=None):
        for note in logs.get("notes", ()):
            self.notes(f"note: {note}")
        self.total, self.num_epochs = int(logs["total_steps"]), int(logs["num_epochs"])
        self.notes(
            f"model: {int(logs['params']):,} parameters; {int(logs['steps_per_epoch'])} "
            f"steps per epoch; TensorBoard logs in {logs['log_dir']}"
        )
        self.bar, self.bar_epoch, self.bar_full = None, None, False

    def on_train_batch_end(self, step, logs=None):
        # As fit shows it: "Epoch k/N", then a bar over that epoch's steps with the
        # epoch's mean loss. Progbar takes numbers only (it averages them).
        if not self.live:
            return
        epoch = int(logs["epoch"])
        if epoch != self.bar_epoch:
            self.write(("\n" if self._bar_open() else "") + f"Epoch {epoch}/{self.num_epochs}")
            self.bar_epoch = epoch
            self.bar = _keras().utils.Progbar(int(logs["steps_per_epoch"]), unit_name="step")
        self.bar_full = int(logs["batch"]) >= int(logs["steps_per_epoch"])
        self.bar.update(int(logs["batch"]), [("loss", float(logs["loss"]))])

    def _bar_open(self) -> bool:
        """A bar is drawn and its line not ended (Progbar ends it when it fills)."""
        return self.bar is not None and not self.bar_full

    def on_epoch_end(self, epoch, logs=None):
        val = "" if logs["val_loss"] is None else f"  val_loss {logs['val_loss']:.4f}"
        best = " (best)" if logs["best"] else ""
        partial = int(logs["partial_steps"])  # steps of an epoch cut short by the budget
        shown = f"{epoch} + {partial} steps" if partial else f"{epoch}"
        line = (
            f"epoch {shown}/{self.num_epochs}  step {int(logs['step'])}/{self.total}  "
            f"train_loss {logs['loss']:.4f}{val}{best}  "
            f"chars/s {logs['chars_per_s']:,.0f}  {logs['seconds']:.1f}s "
            f"+ {logs['boundary_seconds']:.1f}s between epochs "
            f"({logs['val_seconds']:.1f}s validation)"
        )
        self.write(("\n" if self._bar_open() else "") + line)

    def on_test_end(self, logs=None):  # a validation within an epoch (--eval_every)
        if logs.get("val_loss") is None:
            return
        best = " (best)" if logs["best"] else ""
        self.write(
            ("\n" if self._bar_open() else "")
            + f"step {int(logs['step'])}/{self.total}  val_loss {logs['val_loss']:.4f}{best}  "
            f"({logs['val_seconds']:.1f}s validation)"
        )

    def on_train_end(self, logs=None):
        best = (
            "" if logs["best_val_loss"] is None else f", best val loss {logs['best_val_loss']:.4f}"
        )
        budget = " (time budget spent)" if logs["stopped_by_budget"] else ""
        self.notes(
            f"done{budget}: {int(logs['steps'])} steps in {logs['seconds']:.0f}s, "
            f"{logs['chars_per_s']:,.0f} chars/s{best}; model saved in {logs['save_dir']}"
        )
