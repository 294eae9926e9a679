"""``kerasgen compare``: several runs scored on the same held-out text, side by side."""

from __future__ import annotations

from dataclasses import dataclass

from kerasgen import rundir
from kerasgen.evaluate import STREAMS, LossResult
from kerasgen.model import family


@dataclass(frozen=True)
class RunSummary:
    save_dir: str
    model: str  # family and size, e.g. "lstm 2x128"
    level: str
    params: int
    train_seconds: float | None  # in training steps, over the run and its continuations
    chars_per_s: float | None
    loss: LossResult

    def to_dict(self) -> dict:
        """What ``kerasgen compare --json`` prints per run: the summary, and under "loss"
        the object ``kerasgen evaluate --json`` prints."""
        return {
            "save_dir": self.save_dir,
            "model": self.model,
            "level": self.level,
            "params": self.params,
            "train_seconds": self.train_seconds,
            "chars_per_s": self.chars_per_s,
            "loss": self.loss.to_dict(self.save_dir),
        }


def compare_runs(
    save_dirs, data_dir: str | None = None, checkpoint: str = "best", streams: int = STREAMS
) -> list[RunSummary]:
    """Summaries of runs scored on one held-out text: the validation split of
    ``data_dir`` (default: the first run's training data), cut by each run's
    own ``val_frac``; the runs must agree on it, so every row scores the same
    characters, at any level.
    """
    from kerasgen.evaluate import evaluate_model
    from kerasgen.model import count_params
    from kerasgen.run import load

    save_dirs = list(save_dirs)
    if not save_dirs:
        raise ValueError("give at least one run folder to compare")
    runs = [rundir.read_run(d) for d in save_dirs]
    data_dir = data_dir or runs[0].train_config.get("data_dir")
    fracs = {run.train_config.get("val_frac") for run in runs}
    if len(fracs) > 1:
        raise ValueError(
            "the runs held out different fractions (val_frac "
            + ", ".join(str(f) for f in sorted(fracs, key=str))
            + "), so their validation splits differ; compare runs with the same one"
        )
    rows = []
    for save_dir, run in zip(save_dirs, runs):
        model = load(save_dir, checkpoint, jit_compile=False)
        loss = evaluate_model(model, data_dir, streams=streams, start=False)
        seconds = model.state.get("train_seconds")
        rows.append(
            RunSummary(
                save_dir,
                family(run.model_config.model).describe(run.model_config),
                run.vocab.level,
                count_params(model.build(1)),
                seconds,
                model.state.get("train_chars", 0) / seconds if seconds else None,
                loss,
            )
        )
    return rows
