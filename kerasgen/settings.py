"""Training settings: ``TrainConfig``, its checks, and how options become settings.

``resolve_options`` applies the order every setting follows, first match wins:
given by the caller, the preset named (``kerasgen.presets``), recorded by the run
being continued, the default here. The CLI's flags and ``kerasgen.train``'s
keyword arguments are the same names.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from kerasgen import checks
from kerasgen.backward import PRECISIONS
from kerasgen.distribute import STRATEGIES
from kerasgen.errors import ParameterError
from kerasgen.model import DEFAULT_FAMILY, family
from kerasgen.vocab import BYTES, DEFAULT_MAX_VOCAB, DEFAULT_VOCAB_SIZE, LEVELS, MAX_VOCAB_SIZE

LR_SCHEDULES = ("epoch", "cosine")
# Validation during training scores this many characters at the start of the held-out
# split (all of it when the split is smaller): a fixed subset, so a big corpus can be
# validated often; kerasgen evaluate scores the whole split.
DEFAULT_EVAL_CHARS = 250_000
COSINE_FLOOR = 0.1  # the cosine schedule ends at this fraction of learning_rate
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
    jit_compile: bool = False  # XLA-compile the train and eval steps
    time_budget: float | None = None  # seconds of wall clock, validation included
    lr_schedule: str = "epoch"  # "epoch": * decay_rate per epoch; "cosine": see learning_rate_at
    warmup_steps: int = 100  # linear warm-up of the cosine schedule
    # Compute with kerasgen.fused (same math, faster on a CPU); False: the Keras
    # layers (cuDNN on a GPU); None: fused unless a GPU is visible.
    fused: bool | None = None
    strategy: str = "default"  # one of STRATEGIES
    mixed_precision: bool = False  # mixed_float16 compute, float32 logits and loss (GPU)
    # What the fused step's recurrent products and weight-gradient GEMMs compute in
    # (kerasgen.backward): float32, bfloat16, or auto (backward.resolve_precision).
    precision: str = "auto"
    level: str = "char"  # kerasgen.vocab.LEVELS: one id per character, word-level token or subword
    max_vocab: int = DEFAULT_MAX_VOCAB  # word level: keep this many most frequent tokens
    vocab_size: int = DEFAULT_VOCAB_SIZE  # bpe level: tokens to learn (bytes included)
    keep_cr: bool = False  # keep "\r" in the text; False reads CRLF and lone CR as "\n"
    eval_every: int = 0  # also validate (and keep the best) every this many steps; 0: epoch ends
    eval_chars: int = DEFAULT_EVAL_CHARS  # validate on this much of the split; 0: all of it
    preset: str | None = None  # the kerasgen.presets name the settings started from (a label)

    def __post_init__(self):
        for name in ("seq_length", "batch_size", "num_epochs"):
            checks.at_least(name, getattr(self, name), 1)
        checks.at_least("save_every", self.save_every, 0, "0: only at epoch ends")
        checks.positive("learning_rate", self.learning_rate)
        checks.in_range("decay_rate", self.decay_rate, 0.0, 1.0, low_open=True)
        checks.positive("grad_clip", self.grad_clip)
        checks.in_range("val_frac", self.val_frac, 0.0, 1.0, high_open=True)
        if self.time_budget is not None:
            checks.positive("time_budget", self.time_budget)
        checks.seed("seed", self.seed)
        checks.one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        checks.at_least("eval_every", self.eval_every, 0, "0: at epoch ends")
        checks.at_least("eval_chars", self.eval_chars, 0, "0: the whole split")
        checks.at_least("warmup_steps", self.warmup_steps, 0)
        checks.one_of("level", self.level, LEVELS)
        checks.at_least("max_vocab", self.max_vocab, 1)
        checks.in_range("vocab_size", self.vocab_size, BYTES, MAX_VOCAB_SIZE)
        checks.one_of("strategy", self.strategy, STRATEGIES)
        checks.one_of("precision", self.precision, PRECISIONS)
        if self.precision == "bfloat16" and (self.mixed_precision or self.fused is False):
            raise ParameterError(
                "precision",
                "bfloat16 is the fused step's; drop mixed_precision and fused=False, or use "
                "precision='float32'",
            )
        if self.mixed_precision and self.strategy in ("mirrored", "multiworker"):
            raise ParameterError(
                "mixed_precision", "runs on one device for now; drop it or use strategy='default'"
            )


def parse_duration(text: str) -> float:
    """Seconds from ``"600"``, ``"600s"``, ``"10m"``, ``"1.5h"``; ParameterError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text).lower())
    if not match or float(match.group(1)) <= 0:
        raise ParameterError(
            "time_budget", f"{text!r} is not a duration; write e.g. 600s, 10m or 1h"
        )
    return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]


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
# What a continued run does not take over from the saved one: where it is written, and
# how this machine computes (the run may continue on other hardware).
NOT_RESUMED = ("save_dir", "strategy", "fused", "jit_compile", "mixed_precision", "precision")
VOCAB_OPTIONS = {"max_vocab": "word", "vocab_size": "bpe"}  # each with the level it sizes


def resolve_options(options: dict, run=None) -> tuple[TrainConfig, dict]:
    """``TrainConfig`` and the model options from options named as ``kerasgen.train``'s.

    ``run``: the ``rundir.Run`` being continued, read once by the caller. A windowed
    model's (a transformer's) context is its ``seq_length``.
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
    if "model" in options:
        family(options["model"])  # a name that is no family: said before anything else
    _check_applicable(options, run)
    if run is not None:
        options = {**_recorded(run), **options}
        options.setdefault("save_dir", run.save_dir)  # continue in place unless told otherwise
    model_options = {k: options.pop(k) for k in MODEL_OPTIONS if k in options}
    if family(model_options.get("model", DEFAULT_FAMILY)).windowed:
        model_options["context"] = options.get("seq_length", TrainConfig.seq_length)
    return TrainConfig(**options), model_options


def _recorded(run) -> dict:
    """The settings a continued run takes over from the saved one."""
    recorded = {
        **{
            k: v for k, v in run.train_config.items() if k in TRAIN_OPTIONS and k not in NOT_RESUMED
        },
        **{k: v for k, v in run.model_config.to_dict().items() if k in MODEL_OPTIONS},
        "level": run.vocab.level,
    }
    if family(run.model_config.model).windowed:
        recorded["seq_length"] = run.model_config.context
    return recorded


def _spelled(options: dict) -> dict:
    """A copy of ``options`` with ``n_embd`` (a transformer's name) spelled ``rnn_size``."""
    options = dict(options)
    if "n_embd" in options:
        options.setdefault("rnn_size", options.pop("n_embd"))
    return options


def _check_applicable(options: dict, run) -> None:
    """Refuse given options that the model or level they would go with ignores."""
    model, level = options.get("model"), options.get("level")
    if run is not None:
        model, level = model or run.model_config.model, level or run.vocab.level
    if "n_head" in options and not family(model or DEFAULT_FAMILY).windowed:
        raise ParameterError("n_head", "applies to model='transformer' only")
    if options.get("precision") == "bfloat16" and not family(model or DEFAULT_FAMILY).recurrent:
        raise ParameterError(
            "precision", "bfloat16 is the fused recurrent step's; use precision='float32'"
        )
    for name, applies in VOCAB_OPTIONS.items():
        if name in options and (level or "char") != applies:
            raise ParameterError(name, f"applies to level='{applies}' only")
    if run is not None:  # the run keeps its vocabulary, and the size it was made with
        for name in VOCAB_OPTIONS:
            recorded = run.train_config.get(name, options.get(name))
            if name in options and recorded != options[name]:
                raise ParameterError(
                    name,
                    f"{options[name]}: the continued run {run.save_dir} keeps its vocabulary "
                    f"({name} {recorded}); drop {name} or train into a new save_dir",
                )
