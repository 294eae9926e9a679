"""The run folder: the one module that knows its layout.

    save/
      config.json        model settings (ModelConfig) + training settings + the
                         preamble samples start after, JSON
      vocab.json         the vocabulary, JSON (at bpe level with the whole tokenizer)
      latest.ckpt.h5     newest weights + optimizer state + counters
      best.ckpt.h5       weights with the lowest validation loss so far

A run folder is self-contained: sampling needs nothing else (no training data).
Each file is written atomically (temporary file, then rename), so a crash or a
concurrent reader never sees half a file. Checkpoints are plain HDF5: weights
under ``weights/<variable path>`` (e.g. ``weights/lstm_1/lstm_cell/kernel``),
so they load by layer name into the same architecture at any batch size.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from kerasgen import __version__, atomic
from kerasgen.errors import CheckpointError
from kerasgen.model import ModelConfig
from kerasgen.vocab import BpeVocabulary, Vocabulary, WordVocabulary, vocabulary_from_json

CONFIG_NAME = "config.json"
VOCAB_NAME = "vocab.json"
CHECKPOINTS = ("best", "latest")
CHECKPOINT_FORMAT = 1


def checkpoint_path(save_dir: str, which: str) -> str:
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
    return os.path.join(save_dir, f"{which}.ckpt.h5")


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


def write_run(save_dir: str, model_config: ModelConfig, train_config: dict,
              vocab: Vocabulary | WordVocabulary | BpeVocabulary, preamble: str = "") -> None:
    os.makedirs(save_dir, exist_ok=True)
    atomic.write_text(os.path.join(save_dir, CONFIG_NAME), json.dumps(
        {"kerasgen_version": __version__, "model": model_config.to_dict(), "train": train_config,
         "sampling": {"preamble": preamble}},
        indent=2, ensure_ascii=False))
    atomic.write_text(os.path.join(save_dir, VOCAB_NAME), vocab.to_json())


def read_run(save_dir: str) -> Run:
    """Config and vocabulary of a run folder; raises if it holds no trained model."""
    if not os.path.isdir(save_dir):
        raise FileNotFoundError(f"run folder {save_dir} does not exist; train a model first "
                                "(kerasgen train --save_dir ...) or pass the right --save_dir")
    config_path = os.path.join(save_dir, CONFIG_NAME)
    vocab_path = os.path.join(save_dir, VOCAB_NAME)
    if not os.path.isfile(config_path) or not any(
            os.path.isfile(checkpoint_path(save_dir, w)) for w in CHECKPOINTS):
        raise FileNotFoundError(f"{save_dir} holds no checkpoint; train a model first "
                                "(kerasgen train --save_dir ...) or pass the right --save_dir")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        with open(vocab_path, encoding="utf-8") as f:
            vocab = vocabulary_from_json(f.read())
        model_config = ModelConfig.from_dict(config["model"])
        preamble = config.get("sampling", {}).get("preamble", "")
        if not isinstance(preamble, str):
            raise ValueError("the preamble is not a string")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{save_dir} has an unreadable {CONFIG_NAME} or {VOCAB_NAME} "
                              f"({e}); retrain into a fresh --save_dir") from None
    if model_config.vocab_size != len(vocab):
        raise CheckpointError(f"{save_dir}: config says {model_config.vocab_size} tokens "
                              f"but {VOCAB_NAME} has {len(vocab)}; the folder is inconsistent")
    return Run(save_dir, model_config, config.get("train", {}), vocab, preamble)


def save_checkpoint(save_dir: str, which: str, model, optimizer=None, state: dict | None = None):
    """Write model weights (+ optimizer variables + counters in ``state``) atomically."""
    import h5py

    path = checkpoint_path(save_dir, which)
    with atomic.atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = CHECKPOINT_FORMAT
            f.attrs["state"] = json.dumps(state or {})
            weights = f.create_group("weights")
            for v in model.weights:
                weights.create_dataset(v.path, data=np.asarray(v.numpy()))
            if optimizer is not None:
                opt = f.create_group("optimizer")
                for i, v in enumerate(optimizer.variables):
                    opt.create_dataset(str(i), data=np.asarray(v.numpy()))
                opt.attrs["paths"] = json.dumps([v.path for v in optimizer.variables])
    return path


def load_checkpoint(save_dir: str, which: str, model, optimizer=None) -> dict:
    """Load weights by variable path (and optimizer variables if given); return the counters.

    A missing, corrupt, truncated or mismatched file raises CheckpointError and
    leaves the model's variables untouched.
    """
    import h5py

    path = checkpoint_path(save_dir, which)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; pick another --checkpoint "
                                f"({', '.join(CHECKPOINTS)}) or train first")
    try:
        with h5py.File(path, "r") as f:
            state = json.loads(f.attrs["state"])
            values = []
            for v in model.weights:
                data = f["weights"].get(v.path)
                if data is None or tuple(data.shape) != tuple(v.shape):
                    raise CheckpointError(
                        f"{path} does not fit this model: weight {v.path} is "
                        f"{'missing' if data is None else f'shaped {tuple(data.shape)}'} "
                        f"(model wants {tuple(v.shape)})")
                values.append(data[()])
            opt_values = None
            if optimizer is not None and "optimizer" in f:
                group = f["optimizer"]
                opt_values = [group[str(i)][()] for i in range(len(group))]
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({str(e).splitlines()[0]}); "
                              "use the other --checkpoint or retrain") from None
    if opt_values is not None and (len(opt_values) != len(optimizer.variables) or any(
            tuple(np.shape(a)) != tuple(v.shape) for a, v in zip(opt_values, optimizer.variables))):
        raise CheckpointError(f"{path}: optimizer state does not fit this model")
    for v, value in zip(model.weights, values):
        v.assign(value)
    for v, value in zip(optimizer.variables if opt_values is not None else [], opt_values or []):
        v.assign(value)
    return state


def read_checkpoint_state(save_dir: str, which: str) -> dict:
    """The counters stored with a checkpoint (step, epoch, losses) without loading weights."""
    import h5py

    path = checkpoint_path(save_dir, which)
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["state"])
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({str(e).splitlines()[0]}); "
                              "use the other --checkpoint or retrain") from None
