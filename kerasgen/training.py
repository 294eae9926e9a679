"""Training: a text and settings go in, a run folder comes out.

``train`` (the public ``kerasgen.train``) turns options (``kerasgen.settings``)
into settings and returns the trained model; ``run_training`` claims the run
folder and readies the parts the loop (``kerasgen.loop``) runs over:

- ``prepare_data``: the text -> vocabulary, training and validation batches
- ``Trainee``: the model, its optimizer and compiled steps, and the counters,
  restored from the run being continued

A run being replaced (``overwrite``) is set aside only once the new run is
ready, and put back unless the new run saves a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass

from kerasgen import data, rundir, textfiles
from kerasgen.backward import resolve_precision
from kerasgen.errors import (
    ParameterError,
    StorageError,
)
from kerasgen.loop import Budget, StopSignals, TensorBoardLog, TrainResult, run_loop
from kerasgen.model import DEFAULT_FAMILY, ModelConfig, build_model, family
from kerasgen.settings import TrainConfig, resolve_options
from kerasgen.vocab import TokenVocabulary

LINE_START = "\n"  # the token sampling starts with: a zero state reads it first


# ---------------------------------------------------------------- the parts


@dataclass
class TrainingData:
    """What training reads: the vocabulary, the batches and what samples start with."""

    vocab: TokenVocabulary  # at the run's level
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
    splits = data.load_splits(
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
    vocab, train_ids, val_ids, train_chars, notes = splits
    chars_per_token = train_chars / max(len(train_ids), 1)
    model_config = ModelConfig(vocab_size=len(vocab), **model_options)
    if run is not None:
        _check_resumable(run, model_config)
        model_config = run.model_config
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
                f"{e}; or raise val_frac or eval_chars, or pass val_frac 0 to skip validation"
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


def _check_resumable(run: rundir.Run, model_config: ModelConfig) -> None:
    """Refuse a run to continue whose model differs from the one the options describe."""
    diffs = run.model_config.differences(model_config)
    diffs = [
        d.replace("context:", "context (seq_length):")
        for d in diffs
        if not d.startswith("vocab_size")
    ]
    if diffs:
        raise ParameterError(
            "init_from",
            f"{run.save_dir} has a different model ("
            + "; ".join(f"saved {d.replace(' != ', ', requested ')}" for d in diffs)
            + "); drop the differing options or train into a new save_dir",
        )


class Trainee:
    """The model, its optimizer and compiled steps, and the counters a checkpoint keeps."""

    def __init__(
        self,
        config: TrainConfig,
        training: TrainingData,
        strategy,
        distributed: bool,
        init_from: rundir.Run | None,
    ):
        import keras

        from kerasgen import distribute
        from kerasgen.steps import DistributedSteps, SingleDeviceSteps

        self.recurrent = family(training.model_config.model).recurrent
        fused, self.precision = _compute_path(config, training, distributed)
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
                    rundir.load_checkpoint(init_from.save_dir, "latest", self.model, optimizer)
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
                    self.precision,
                )
            else:
                self.steps = SingleDeviceSteps(
                    self.model,
                    optimizer,
                    fused=fused,
                    jit_compile=config.jit_compile,
                    line_start_id=training.line_start_id,
                    precision=self.precision,
                )


def _compute_path(
    config: TrainConfig, training: TrainingData, distributed: bool
) -> tuple[bool, str]:
    """Whether the fused step computes (``kerasgen.fused``) and its precision
    (``kerasgen.backward``); ParameterError for settings that cannot go together."""
    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    fused = config.fused
    if fused is None:
        fused = distributed or not gpu
    if not family(training.model_config.model).recurrent:
        if distributed:
            raise ParameterError(
                "strategy",
                f"{config.strategy}: a {training.model_config.model} model trains on one "
                "device; drop strategy",
            )
        fused = False  # the fast path computes recurrent layers only
    if distributed and not fused:
        raise ParameterError(
            "fused",
            f"False works on one device only; drop it to train with strategy {config.strategy}",
        )
    fused = fused and (distributed or not config.mixed_precision)  # mixed: the Keras layers
    if config.precision == "bfloat16" and not fused:
        raise ParameterError(
            "precision",
            "bfloat16 is the fused recurrent step's, which this run does not use; "
            "use precision='float32'",
        )
    return fused, resolve_precision(config.precision, fused and not gpu)


# ---------------------------------------------------------------- the loop


def run_training(
    config: TrainConfig,
    model_options: dict | None = None,
    init_from: str | rundir.Run | None = None,
    callbacks=(),
    overwrite: bool = False,
    text: str | None = None,
) -> TrainResult:
    """Train on ``config.data_dir`` into ``config.save_dir``.

    ``model_options``: ModelConfig fields other than ``vocab_size`` (taken from
    the data). ``init_from``: continue a saved run, its folder or the ``rundir.Run``
    read from it (weights, optimizer state, counters, schedule). A trained run in
    ``save_dir`` is never replaced unless ``overwrite`` (continuing it in place is
    not replacing it), and then only once the new run has saved a checkpoint.
    ``text``: the training text, written to ``config.data_dir`` first
    (``kerasgen.train(text=...)``).
    Raises Interrupted (after saving) on Ctrl-C or SIGTERM, DivergedError on
    a non-finite loss (nothing saved after it).
    """
    from kerasgen import distribute

    budget = Budget(config.time_budget, 0)  # the budget counts data preparation too
    # First: a multi-worker strategy must exist before TensorFlow starts its runtime.
    strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    precision = _precision_policy("mixed_float16" if config.mixed_precision else None)
    lock = rundir.RunLock(config.save_dir) if chief else contextlib.nullcontext()
    model_options = dict(model_options or {})
    if family(model_options.get("model", DEFAULT_FAMILY)).windowed:
        model_options.setdefault("context", config.seq_length)  # it sees one training window
    if isinstance(init_from, str):
        init_from = rundir.read_run(init_from)
    run = init_from
    with precision, lock, StopSignals() as signals:
        replacing = _claim_run_folder(config, run, overwrite, chief)
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
            trainee = Trainee(config, training, strategy, distributed, run)
            board = TensorBoardLog(config, training, chief)
            if replacing and replacement is None:
                replacement = rundir.Replacement.begin(config.save_dir)
            if chief:  # the precision recorded is the one this machine computes in
                _write_run_files(
                    dataclasses.replace(config, precision=trainee.precision), training, run
                )
            budget.val_steps = 0 if training.val is None else len(training.val)
            return run_loop(
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
        atomic.write_text(os.path.join(folder, textfiles.INPUT_NAME), text)
    except OSError as e:
        raise StorageError(
            f"could not write the training text into {folder} "
            f"({e.strerror or e}); pass a writable save_dir"
        ) from None


def _write_run_files(config: TrainConfig, training: TrainingData, run: rundir.Run | None):
    """The new run's config and vocabulary, and the best checkpoint of the run it
    continues when that one is in another folder."""
    rundir.write_run(
        config.save_dir,
        training.model_config,
        dataclasses.asdict(config),
        training.vocab,
        training.preamble,
    )
    if (
        run is not None
        and not _same_folder(run.save_dir, config.save_dir)
        and run.has_checkpoint("best")
    ):
        rundir.copy_checkpoint(run.save_dir, config.save_dir, "best")


@contextlib.contextmanager
def _precision_policy(policy: str | None):
    """Keras's global dtype policy set to ``policy`` (None: left as it is) meanwhile."""
    if policy is None:
        yield
        return
    import keras

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
    config: TrainConfig, run: rundir.Run | None, overwrite: bool, chief: bool
) -> bool:
    """Check what ``save_dir`` and the run to continue hold; return whether a trained run
    in ``save_dir`` is to be replaced. Nothing is removed here."""
    save_dir = config.save_dir
    init_from = None if run is None else run.save_dir
    replacing = False
    if chief:
        rundir.remove_leftovers(save_dir)  # of a write that a kill interrupted
        rundir.Replacement.recover(save_dir)  # of a replacement that a kill interrupted
        if rundir.has_trained_model(save_dir) and not _same_folder(init_from, save_dir):
            if not overwrite:
                hint = (
                    f"continue it with init_from {save_dir}"
                    if init_from is None
                    else f"continue {init_from} in place with save_dir {init_from}"
                )
                raise ParameterError(
                    "save_dir",
                    f"{save_dir} already holds a trained model; {hint}, pick another "
                    "save_dir, or pass overwrite=True to replace it",
                )
            replacing = True
    if run is None:
        return replacing
    if not run.has_checkpoint("latest"):
        raise ParameterError("init_from", f"{init_from} has no latest checkpoint to continue from")
    if run.vocab.level != config.level:
        raise ParameterError(
            "level",
            f"{config.level}: the continued run {init_from} was trained at level "
            f"{run.vocab.level}; pass level='{run.vocab.level}'",
        )
    return replacing


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
    run = None if init_from is None else rundir.read_run(init_from)  # read once, passed on
    config, model_options = resolve_options(options, run)
    if text is not None:
        if not text:
            raise ValueError("text is empty; give some text to train on")
        if (
            rundir.has_trained_model(config.save_dir)
            and not overwrite
            and not _same_folder(init_from, config.save_dir)
        ):
            raise ParameterError(
                "save_dir",
                f"{config.save_dir} already holds a trained model; pick another "
                "save_dir or pass overwrite=True",
            )
        config = dataclasses.replace(config, data_dir=rundir.text_dir(config.save_dir))
    if callbacks is None:
        from kerasgen.progress import training_progress

        callbacks = [training_progress()] if verbose else []
    result = run_training(config, model_options, run, callbacks, overwrite, text)
    return load(result.save_dir) if rundir.has_trained_model(result.save_dir) else None
