"""``--time_budget``, its parsing, and the cosine learning-rate schedule."""

import math

import pytest
from runner import run
from tiny import TINY_TRAIN

from kerasgen import rundir
from kerasgen.loop import learning_rate_at
from kerasgen.model import build_model
from kerasgen.settings import TrainConfig, parse_duration
from kerasgen.training import run_training as train


@pytest.mark.parametrize(
    "text, seconds",
    [("600", 600), ("600s", 600), ("10m", 600), ("1h", 3600), ("1.5h", 5400), (" 2M ", 120)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5m", "0", "10x", "m", "1h30"])
def test_parse_duration_rejects_nonsense(text):
    with pytest.raises(ValueError, match="10m"):
        parse_duration(text)


def test_cli_rejects_bad_budget_with_usage_error(data_dir, tmp_path):
    r = run(
        [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "s"),
            "--time_budget",
            "ten minutes",
        ],
    )
    assert r.exit_code == 2 and "--time_budget" in r.output and "10m" in r.output
    assert not (tmp_path / "s").exists()


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    config = TrainConfig(lr_schedule="cosine", warmup_steps=10, learning_rate=0.01)
    assert learning_rate_at(config, 0, 0, 0.0) == pytest.approx(0.001)
    assert learning_rate_at(config, 0, 9, 0.0) == pytest.approx(0.01)
    assert learning_rate_at(config, 3, 500, 0.5) == pytest.approx(0.01 * 0.55)
    assert learning_rate_at(config, 9, 900, 1.0) == pytest.approx(0.001)
    assert learning_rate_at(config, 9, 900, 7.0) == pytest.approx(0.001)
    epoch = TrainConfig(learning_rate=0.01, decay_rate=0.5)
    assert learning_rate_at(epoch, 2, 123, 0.9) == pytest.approx(0.0025)


def test_time_budget_stops_on_time_and_leaves_a_loadable_best_checkpoint(data_dir, tmp_path):
    budget = 4.0
    flags = dict(zip(TINY_TRAIN[0::2], TINY_TRAIN[1::2]))
    config = TrainConfig(
        data_dir=str(data_dir),
        save_dir=str(tmp_path / "save"),
        log_dir=str(tmp_path / "logs"),
        num_epochs=100_000,
        batch_size=int(flags["--batch_size"]),
        seq_length=int(flags["--seq_length"]),
        save_every=0,
        seed=1,
        time_budget=budget,
        lr_schedule="cosine",
        warmup_steps=5,
    )
    result = train(config, {"rnn_size": 16})
    assert result.stopped_by_budget  # how close to the budget is a benchmark's question
    assert result.epochs < 100_000 and math.isfinite(result.best_val_loss)
    saved = rundir.read_run(str(tmp_path / "save"))
    model = build_model(saved.model_config, 1)
    state = rundir.load_checkpoint(str(tmp_path / "save"), "best", model)
    assert state["best_val_loss"] == pytest.approx(result.best_val_loss)
