"""The run folder: the one module that knows its layout.

    save/
      config.json        the run format (RUN_FORMAT), model settings (ModelConfig) +
                         training settings + the preamble samples start after, JSON
      vocab.json         the vocabulary, JSON (at bpe level with the whole tokenizer)
      latest.ckpt.h5     newest weights + optimizer state + counters
      best.ckpt.h5       weights with the lowest validation loss so far
      checkpoints.json   the sha256 of each checkpoint, checked when it is loaded
      .lock              while a trainer writes the folder: its process id and host
      text/input.txt     the training text, when it was given as a string (kerasgen.train)
      .replaced/         a trained run that ``train --overwrite`` is replacing, kept until
                         the new run has saved its first checkpoint (``Replacement``)

A run folder is self-contained: sampling needs nothing else (no training data).
Each file is written atomically (temporary file, then rename), so a crash or a
concurrent reader never sees half a file. Checkpoints are plain HDF5: weights
under ``weights/<variable path>`` (e.g. ``weights/lstm_1/lstm_cell/kernel``),
so they load by layer name into the same architecture at any batch size.

A checksum catches a checkpoint damaged on disk (flipped bytes load without
complaint otherwise and the model writes gibberish). It is recorded in two
phases around the rename (the new hash is accepted beside the old one before
the file is replaced, then alone), so a kill at any moment leaves a file that
matches its record.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass

import numpy as np

from kerasgen import __version__, atomic
from kerasgen.errors import (
    CheckpointError,
    DivergedError,
    NewerFormatError,
    RunLockedError,
    StorageError,
)
from kerasgen.model import ModelConfig
from kerasgen.vocab import BpeVocabulary, Vocabulary, WordVocabulary, vocabulary_from_json

CONFIG_NAME = "config.json"
VOCAB_NAME = "vocab.json"
CHECKSUMS_NAME = "checkpoints.json"
LOCK_NAME = ".lock"
TEXT_DIR = "text"
CHECKPOINTS = ("best", "latest")
CHECKPOINT_FORMAT = 1
# The layout this module writes, recorded in config.json as "format": 1 (kerasgen 0.1,
# which wrote no "format"), 2 (0.2: the key itself). Raise it, and the package version,
# with every change a reader must know of; read_run refuses a newer one.
RUN_FORMAT = 2


def checkpoint_path(save_dir: str, which: str) -> str:
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
    return os.path.join(save_dir, f"{which}.ckpt.h5")


def text_dir(save_dir: str) -> str:
    """Where a training text given as a string is kept (the run's data folder)."""
    return os.path.join(save_dir, TEXT_DIR)


def has_trained_model(save_dir: str) -> bool:
    return any(os.path.isfile(checkpoint_path(save_dir, w)) for w in CHECKPOINTS)


REPLACED_DIR = ".replaced"
DISCARDED_DIR = ".replaced.discarded"  # a .replaced folder on its way out
COMPLETE_MARK = ".complete"  # in .replaced once every file of the old run is in it
RUN_FILES = (CONFIG_NAME, VOCAB_NAME, CHECKSUMS_NAME, "best.ckpt.h5", "latest.ckpt.h5", TEXT_DIR)


class Replacement:
    """A trained run set aside while a new one replaces it (``train --overwrite``).

    ``begin`` moves the run's files (``RUN_FILES``) into ``save_dir/.replaced``
    (renames, nothing is copied); ``discard`` deletes them once the new run has
    saved a checkpoint; ``restore`` puts them back when the new run fails before
    that, so a refused or failed ``--overwrite`` leaves the old run byte for byte
    as it was. ``recover`` finishes whichever of these a kill interrupted: the
    next trainer, and any reader while no trainer holds the folder, call it.
    """

    def __init__(self, save_dir: str):
        self.save_dir = save_dir
        self.aside = os.path.join(save_dir, REPLACED_DIR)
        self.done = False

    @classmethod
    def begin(cls, save_dir: str) -> Replacement:
        self = cls(save_dir)
        try:
            os.makedirs(self.aside, exist_ok=True)
            for name in RUN_FILES:
                if os.path.lexists(os.path.join(save_dir, name)):
                    os.replace(os.path.join(save_dir, name), os.path.join(self.aside, name))
            atomic.write_text(os.path.join(self.aside, COMPLETE_MARK), "")
        except OSError as e:
            self.restore()
            raise StorageError(
                f"could not set the trained run in {save_dir} aside to replace "
                f"it ({_reason(e)}); it is as it was"
            ) from None
        return self

    def discard(self) -> None:
        """The new run has a checkpoint: delete the old run."""
        if self.done:
            return
        self.done = True
        discarded = os.path.join(self.save_dir, DISCARDED_DIR)
        with contextlib.suppress(OSError):
            os.replace(self.aside, discarded)  # one rename: never half a .replaced folder
            shutil.rmtree(discarded, ignore_errors=True)

    def restore(self) -> None:
        """The new run saved nothing: put the old run's files back over the new run's."""
        if self.done:
            return
        self.done = True
        mark = os.path.join(self.aside, COMPLETE_MARK)
        # Once every old file was set aside, the files in the folder are the new run's.
        new_run_files = os.path.exists(mark)
        with contextlib.suppress(FileNotFoundError):
            os.remove(mark)  # from here on, an interrupted restore is finished by recover
        for name in RUN_FILES:
            here, old = os.path.join(self.save_dir, name), os.path.join(self.aside, name)
            if os.path.lexists(old) or new_run_files:
                _remove_path(here)
            if os.path.lexists(old):
                os.replace(old, here)
        with contextlib.suppress(OSError):
            os.rmdir(self.aside)

    @classmethod
    def recover(cls, save_dir: str) -> str | None:
        """Finish a replacement a kill interrupted; a one-line note of what was done, or None."""
        shutil.rmtree(os.path.join(save_dir, DISCARDED_DIR), ignore_errors=True)
        self = cls(save_dir)
        if not os.path.isdir(self.aside):
            return None
        complete = os.path.exists(os.path.join(self.aside, COMPLETE_MARK))
        if complete and has_trained_model(save_dir):
            self.discard()
            return None
        self.restore()
        return (
            f"{save_dir}: a replacement (--overwrite) stopped before the new run saved a "
            "checkpoint; the previous run was put back"
        )


def _remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def remove_leftovers(save_dir: str) -> list[str]:
    """Delete the temporary files an interrupted write left in ``save_dir``; their names."""
    removed = []
    for name in sorted(os.listdir(save_dir)) if os.path.isdir(save_dir) else []:
        path = os.path.join(save_dir, name)
        if atomic.is_leftover(name) and os.path.isfile(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(name)
    return removed


class RunLock:
    """One trainer per run folder: ``save_dir/.lock`` names the holder (process id, host).

    A second trainer is refused at once with ``RunLockedError``; a lock whose
    process is gone (same host, no such process) is taken over. Released on
    exit, and the folder removed again if this lock created it and it is empty.
    """

    def __init__(self, save_dir: str):
        self.save_dir, self.path = save_dir, os.path.join(save_dir, LOCK_NAME)
        self.created_dir = False

    def __enter__(self):
        if not os.path.isdir(self.save_dir):
            os.makedirs(self.save_dir)
            self.created_dir = True
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None or not self._gone(holder):
                    who = (
                        "another process"
                        if holder is None
                        else f"process {holder['pid']} on {holder['host']} "
                        f"(since {holder['since']})"
                    )
                    raise RunLockedError(
                        f"{self.save_dir} is being trained by {who}; wait for it to finish, "
                        f"or remove {self.path} if that process is gone"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)  # its process is gone: take the lock over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise RunLockedError(f"could not take the lock {self.path}; try again")

    def _holder(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                holder = json.load(f)
            return holder if {"pid", "host", "since"} <= set(holder) else None
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def _gone(holder: dict) -> bool:
        if holder["host"] != socket.gethostname():
            return False  # cannot tell from here
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OSError, ValueError):
            return False
        return False

    def __exit__(self, *exc):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        if self.created_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.save_dir)  # only if empty: nothing was trained
        return False


@dataclass(frozen=True)
class Run:
    """What a run folder says about its model (weights are loaded separately)."""

    save_dir: str
    model_config: ModelConfig
    train_config: dict
    vocab: Vocabulary | WordVocabulary | BpeVocabulary
    preamble: str = ""  # the text read before every prime ("" for runs trained before it existed)

    def has_checkpoint(self, which: str) -> bool:
        return os.path.isfile(checkpoint_path(self.save_dir, which))


def write_run(
    save_dir: str,
    model_config: ModelConfig,
    train_config: dict,
    vocab: Vocabulary | WordVocabulary | BpeVocabulary,
    preamble: str = "",
) -> None:
    try:
        os.makedirs(save_dir, exist_ok=True)
        atomic.write_text(
            os.path.join(save_dir, CONFIG_NAME),
            json.dumps(
                {
                    "format": RUN_FORMAT,
                    "kerasgen_version": __version__,
                    "model": model_config.to_dict(),
                    "train": train_config,
                    "sampling": {"preamble": preamble},
                },
                indent=2,
                ensure_ascii=False,
            ),
        )
        atomic.write_text(os.path.join(save_dir, VOCAB_NAME), vocab.to_json())
    except OSError as e:
        raise StorageError(f"could not write the run folder {save_dir} ({_reason(e)})") from None


def read_run(save_dir: str) -> Run:
    """Config and vocabulary of a run folder; raises if it holds no trained model."""
    if not os.path.isdir(save_dir):
        raise FileNotFoundError(
            f"run folder {save_dir} does not exist; train a model first "
            "(kerasgen train --save_dir ...) or pass the right save_dir"
        )
    if not os.path.exists(os.path.join(save_dir, LOCK_NAME)):  # no trainer is at work here
        with contextlib.suppress(OSError):  # a folder this process may not write
            Replacement.recover(save_dir)
    config_path = os.path.join(save_dir, CONFIG_NAME)
    vocab_path = os.path.join(save_dir, VOCAB_NAME)
    if not os.path.isfile(config_path) or not any(
        os.path.isfile(checkpoint_path(save_dir, w)) for w in CHECKPOINTS
    ):
        if os.path.isdir(os.path.join(save_dir, REPLACED_DIR)):
            raise FileNotFoundError(
                f"{save_dir} is being replaced by a new run (train --overwrite) that has not "
                f"saved a checkpoint yet; the previous run stays in {REPLACED_DIR} until then"
            )
        raise FileNotFoundError(
            f"{save_dir} holds no checkpoint; train a model first "
            "(kerasgen train --save_dir ...) or pass the right save_dir"
        )
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        _check_format(save_dir, config)
        with open(vocab_path, encoding="utf-8") as f:
            vocab = vocabulary_from_json(f.read())
        model_config = ModelConfig.from_dict(config["model"])
        preamble = config.get("sampling", {}).get("preamble", "")
        if not isinstance(preamble, str):
            raise ValueError("the preamble is not a string")
    except NewerFormatError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(
            f"{save_dir} has an unreadable {CONFIG_NAME} or {VOCAB_NAME} "
            f"({e}); retrain into a fresh save_dir"
        ) from None
    if model_config.vocab_size != len(vocab):
        raise CheckpointError(
            f"{save_dir}: config says {model_config.vocab_size} tokens "
            f"but {VOCAB_NAME} has {len(vocab)}; the folder is inconsistent"
        )
    return Run(save_dir, model_config, config.get("train", {}), vocab, preamble)


def _check_format(save_dir: str, config) -> None:
    """Refuse a run folder of a format newer than this kerasgen reads."""
    found = config.get("format", 1) if isinstance(config, dict) else 1
    if not isinstance(found, int) or isinstance(found, bool) or found > RUN_FORMAT:
        made_by = config.get("kerasgen_version", "?")
        raise NewerFormatError(
            f"{save_dir} was made by a newer kerasgen ({made_by}, run format {found}); this "
            f"kerasgen {__version__} reads run formats up to {RUN_FORMAT}: upgrade kerasgen"
        )


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_checksums(save_dir: str) -> dict[str, list[str]]:
    """checkpoints.json: each checkpoint's file name -> the sha256 hex digests accepted."""
    path = os.path.join(save_dir, CHECKSUMS_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            sums = json.load(f)
        if not isinstance(sums, dict) or not all(
            isinstance(v, list) and all(isinstance(h, str) for h in v) for v in sums.values()
        ):
            raise ValueError("not an object of lists of sha256 digests")
        return sums
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is unreadable ({str(e).splitlines()[0][:200]}); "
            "delete it to load the checkpoints unchecked"
        ) from None


def _record_checksum(save_dir: str, which: str, accepted: list[str]) -> None:
    sums = _read_checksums(save_dir)
    sums[f"{which}.ckpt.h5"] = accepted
    atomic.write_text(os.path.join(save_dir, CHECKSUMS_NAME), json.dumps(sums, indent=1))


def verify_checkpoint(save_dir: str, which: str) -> None:
    """Raise CheckpointError if the checkpoint does not match its recorded sha256
    (runs from before checksums have none, and are not checked)."""
    accepted = _read_checksums(save_dir).get(f"{which}.ckpt.h5")
    path = checkpoint_path(save_dir, which)
    if accepted and _sha256(path) not in accepted:
        other = next(w for w in CHECKPOINTS if w != which)
        raise CheckpointError(
            f"{path} is damaged (its sha256 does not match {CHECKSUMS_NAME}); "
            f"use checkpoint='{other}' or retrain"
        )


def copy_checkpoint(from_dir: str, to_dir: str, which: str) -> None:
    """Copy a checkpoint (and its checksum) from one run folder to another."""
    verify_checkpoint(from_dir, which)
    target = checkpoint_path(to_dir, which)
    digest = _sha256(checkpoint_path(from_dir, which))
    _record_checksum(to_dir, which, _accepted_with(to_dir, which, digest))
    with (
        atomic.atomic_path(target, suffix=".h5") as tmp,
        open(checkpoint_path(from_dir, which), "rb") as src,
        open(tmp, "wb") as dst,
    ):
        dst.write(src.read())
    _record_checksum(to_dir, which, [digest])


def _accepted_with(save_dir: str, which: str, digest: str) -> list[str]:
    """The hashes accepted while ``digest`` replaces the current file."""
    old = _read_checksums(save_dir).get(f"{which}.ckpt.h5") or []
    return old[-1:] + [digest]


def save_checkpoint(save_dir: str, which: str, model, optimizer=None, state: dict | None = None):
    """Write model weights (+ optimizer variables + counters in ``state``) atomically.

    Refuses (DivergedError) weights that are not all finite, so a diverged
    run never overwrites a good checkpoint; a write that fails (a full disk)
    raises StorageError and leaves the previous file as it was.
    """
    import h5py

    path = checkpoint_path(save_dir, which)
    weights = [(v.path, np.asarray(v.numpy())) for v in model.weights]
    if not all(np.isfinite(w).all() for _, w in weights if np.issubdtype(w.dtype, np.floating)):
        raise DivergedError(f"the weights are not finite numbers; {path} was not written")

    digest = []

    def record(tmp):
        digest.append(_sha256(tmp))
        _record_checksum(save_dir, which, _accepted_with(save_dir, which, digest[0]))

    # The HDF5 file is built in memory and written with plain file I/O: h5py does
    # not survive a write that fails part-way (a full disk), plain writes raise.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["format"] = CHECKPOINT_FORMAT
        f.attrs["state"] = json.dumps(state or {})
        group = f.create_group("weights")
        for name, value in weights:
            group.create_dataset(name, data=value)
        if optimizer is not None:
            opt = f.create_group("optimizer")
            for i, v in enumerate(optimizer.variables):
                opt.create_dataset(str(i), data=np.asarray(v.numpy()))
            opt.attrs["paths"] = json.dumps([v.path for v in optimizer.variables])
    try:
        with (
            atomic.atomic_path(path, suffix=".h5", before_replace=record) as tmp,
            open(tmp, "wb") as f,
        ):
            f.write(buffer.getbuffer())
        _record_checksum(save_dir, which, digest)
    except OSError as e:
        raise StorageError(
            f"could not write {path} ({_reason(e)}); free some disk space and "
            "continue with init_from; the earlier checkpoints are intact"
        ) from None
    return path


def _reason(error: OSError) -> str:
    """The operating system's words for a failed write, without h5py's wrapping."""
    text = str(error)
    for known in (
        "No space left on device",
        "File too large",
        "Disk quota exceeded",
        "Read-only file system",
        "Permission denied",
    ):
        if known in text:
            return known
    return error.strerror or text.splitlines()[0][:200]


def load_checkpoint(save_dir: str, which: str, model, optimizer=None) -> dict:
    """Load weights by variable path (and optimizer variables if given); return the counters.

    A missing, corrupt, truncated or mismatched file raises CheckpointError and
    leaves the model's variables untouched.
    """
    import h5py

    path = checkpoint_path(save_dir, which)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} does not exist; use the other checkpoint "
            f"({', '.join(CHECKPOINTS)}) or train first"
        )
    verify_checkpoint(save_dir, which)
    try:
        with h5py.File(path, "r") as f:
            state = _state(f)
            values = []
            for v in model.weights:
                data = f["weights"].get(v.path)
                if data is None or tuple(data.shape) != tuple(v.shape):
                    raise CheckpointError(
                        f"{path} does not fit this model: weight {v.path} is "
                        f"{'missing' if data is None else f'shaped {tuple(data.shape)}'} "
                        f"(model wants {tuple(v.shape)})"
                    )
                values.append(data[()])
            opt_values = None
            if optimizer is not None and "optimizer" in f:
                group = f["optimizer"]
                opt_values = [group[str(i)][()] for i in range(len(group))]
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({str(e).splitlines()[0]}); "
            "use the other checkpoint or retrain"
        ) from None
    if opt_values is not None and (
        len(opt_values) != len(optimizer.variables)
        or any(
            tuple(np.shape(a)) != tuple(v.shape) for a, v in zip(opt_values, optimizer.variables)
        )
    ):
        raise CheckpointError(f"{path}: optimizer state does not fit this model")
    for v, value in zip(model.weights, values):
        v.assign(value)
    for v, value in zip(optimizer.variables if opt_values is not None else [], opt_values or []):
        v.assign(value)
    return state


def _state(f) -> dict:
    """The counters a checkpoint file stores (a JSON object in its ``state`` attribute)."""
    state = json.loads(f.attrs["state"])
    if not isinstance(state, dict):
        raise ValueError("its state is not a JSON object")
    return state


def read_checkpoint_state(save_dir: str, which: str) -> dict:
    """The counters stored with a checkpoint (step, epoch, losses) without loading weights."""
    import h5py

    path = checkpoint_path(save_dir, which)
    try:
        with h5py.File(path, "r") as f:
            return _state(f)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({str(e).splitlines()[0]}); "
            "use the other checkpoint or retrain"
        ) from None
