"""kerasgen train --preset: named settings shipped as JSON inside the package."""

import fnmatch
import json
import pathlib
import re

import pytest
from runner import run

import kerasgen
from kerasgen.presets import as_flags, load_preset, preset_names
from kerasgen.rundir import read_run
from kerasgen.settings import TrainConfig, parse_duration, resolve_options

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_shipped_presets_load_and_resolve():
    assert {"shakespeare-10min", "python-20min"} <= set(preset_names())
    assert load_preset("shakespeare-10min") == {
        "rnn_size": 256,
        "seq_length": 100,
        "output_keep_prob": 0.8,
        "learning_rate": 0.003,
        "lr_schedule": "cosine",
        "time_budget": "10m",
    }
    assert load_preset("python-20min")["data_dir"] == "data/python"
    for name in preset_names():
        config, model = resolve_options({"preset": name})
        assert config.preset == name
        for key, value in load_preset(name).items():
            got = model[key] if key in model else getattr(config, key)
            if key == "time_budget":
                value = parse_duration(value)
            assert got == value, (name, key)
    config, _ = resolve_options({"preset": "python-20min"})
    assert config.time_budget == 1200 and config.data_dir == "data/python"


def test_typed_options_override_the_preset_and_the_preset_overrides_the_recorded_run(trained_run):
    config, model = resolve_options(
        {"preset": "shakespeare-10min", "rnn_size": 64, "time_budget": "30s"}
    )
    assert model["rnn_size"] == 64 and config.seq_length == 100 and config.time_budget == 30
    assert config.learning_rate == 0.003 and config.batch_size == TrainConfig.batch_size
    # n_embd is rnn_size's other name: typed, it still beats the preset's rnn_size.
    _, model = resolve_options(
        {"preset": "shakespeare-10min", "model": "transformer", "n_embd": 32}
    )
    assert model["rnn_size"] == 32 and model["context"] == 100
    # typed > preset > recorded > defaults
    _, save = trained_run
    recorded = json.loads((save / "config.json").read_text())["train"]
    assert recorded["lr_schedule"] == "epoch" and recorded["batch_size"] == 4
    config, model = resolve_options(
        {"preset": "shakespeare-10min", "learning_rate": 0.01}, read_run(str(save))
    )
    assert config.learning_rate == 0.01  # typed
    assert config.lr_schedule == "cosine" and model["rnn_size"] == 256  # the preset's
    assert config.batch_size == 4 and config.save_dir == str(save)  # recorded
    assert config.preset == "shakespeare-10min"
    config, _ = resolve_options({}, read_run(str(save)))
    assert config.lr_schedule == "epoch" and config.preset is None


def test_train_help_lists_every_preset_with_its_flags():
    r = run(["train", "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())  # help is wrapped
    for name in preset_names():
        assert f"{name}: {as_flags(load_preset(name))}" in text
    assert "[" + "|".join(preset_names()) + "]" in text


def test_unknown_preset_is_a_usage_error_naming_the_presets(tmp_path):
    r = run(["train", "--preset", "python-5min", "--save_dir", str(tmp_path / "x")])
    assert r.exit_code == 2
    error = r.output.strip().splitlines()[-1]
    assert "--preset 'python-5min' is unknown" in error
    assert all(name in error for name in preset_names())
    with pytest.raises(ValueError, match=r"choose one of .*shakespeare-10min"):
        kerasgen.train(text="x = 1\n" * 100, save_dir=str(tmp_path / "y"), preset="nope")
    assert not (tmp_path / "y").exists()


def test_python_preset_without_its_corpus_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/python here
    r = run(["train", "--preset", "python-20min", "--save_dir", "s"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        "Error: data directory data/python does not exist; build a Python corpus there with: "
        "kerasgen corpus python --out data/python/input.txt"
    )
    assert not (tmp_path / "s").exists()


def test_a_preset_run_records_its_name_and_settings(data_dir, tmp_path, tiny_train):
    save = tmp_path / "save"
    r = run(
        [
            "train",
            "--preset",
            "shakespeare-10min",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(save),
            "--log_dir",
            str(tmp_path / "logs"),
            "--num_epochs",
            "1",
            *tiny_train,
        ]
    )
    assert r.exit_code == 0, r.output
    config = json.loads((save / "config.json").read_text())
    assert config["train"]["preset"] == "shakespeare-10min"
    assert config["train"]["lr_schedule"] == "cosine"  # from the preset
    assert config["train"]["learning_rate"] == 0.003 and config["train"]["time_budget"] == 600
    assert config["model"]["rnn_size"] == 16 and config["train"]["seq_length"] == 16  # typed


def test_presets_are_package_data():
    setup = (ROOT / "setup.py").read_text()
    patterns = re.search(r'package_data=\{"kerasgen": \[([^\]]*)\]', setup).group(1)
    patterns = re.findall(r'"([^"]+)"', patterns)
    for path in (ROOT / "kerasgen" / "presets").iterdir():
        assert any(fnmatch.fnmatch(f"presets/{path.name}", p) for p in patterns), path.name
        assert isinstance(json.loads(path.read_text()), dict)
