import json
import os

import numpy as np
import pytest
from runner import run
from tiny import TINY_TRAIN, TRAINED_EPOCHS

from kerasgen import rundir


@pytest.fixture
def trained(trained_training):
    """The session's run: (base folder, run folder, TensorBoard folder, train's output)."""
    return trained_training


def test_train_writes_self_contained_run_folder(trained):
    _base, save, _, output = trained
    assert {"config.json", "vocab.json", "latest.ckpt.h5", "best.ckpt.h5"} <= set(os.listdir(save))
    assert f"epoch {TRAINED_EPOCHS}/{TRAINED_EPOCHS}" in output and "val_loss" in output
    config = json.loads((save / "config.json").read_text())
    assert config["model"]["rnn_size"] == 16 and config["train"]["batch_size"] == 4
    state = rundir.read_checkpoint_state(str(save), "latest")
    assert state["epoch"] == TRAINED_EPOCHS and state["step"] > 0


def test_sample_prints_real_text_without_training_data(trained, tmp_path):
    base, save, _, _ = trained
    moved = tmp_path / "moved"
    os.rename(base / "data", moved)  # sampling must not need the data
    try:
        r = run(
            ["sample", "--save_dir", str(save), "-n", "200", "--prime", r"KING\n", "--seed", "3"]
        )
    finally:
        os.rename(moved, base / "data")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("KING\n") and "b'" not in r.output and "\\n" not in r.output
    again = run(
        ["sample", "--save_dir", str(save), "-n", "200", "--prime", r"KING\n", "--seed", "3"]
    )
    assert again.output == r.output  # same seed, same text
    plain = run(
        [
            "sample",
            "--save_dir",
            str(save),
            "-n",
            "200",
            "--prime",
            r"KING\n",
            "--seed",
            "3",
            "--no_jit_compile",
        ]
    )
    assert plain.output == r.output  # the compiled and the plain loop draw the same ids
    out = tmp_path / "out.txt"
    r = run(
        [
            "sample",
            "--save_dir",
            str(save),
            "-n",
            "50",
            "--num_samples",
            "3",
            "--checkpoint",
            "latest",
            "-o",
            str(out),
            "--seed",
            "1",
        ]
    )
    assert r.exit_code == 0 and r.output.count("----") == 2
    assert out.read_text(encoding="utf-8") == r.output


def test_tensorboard_event_files_hold_the_tags(trained):
    import tensorflow as tf

    _, _, logs, _ = trained
    (run_dir,) = os.listdir(logs)
    tags, val_losses = {}, []
    for name in os.listdir(logs / run_dir):
        for event in tf.compat.v1.train.summary_iterator(str(logs / run_dir / name)):
            for value in event.summary.value:
                tags[value.tag] = tags.get(value.tag, 0) + 1
                if value.tag == "loss/val":
                    val_losses.append(float(tf.make_ndarray(value.tensor)))
    assert {"loss/train", "loss/val", "learning_rate", "chars_per_s", "sample"} <= set(tags)
    epochs = TRAINED_EPOCHS
    assert tags["loss/val"] == epochs and tags["sample"] == epochs and tags["loss/train"] > epochs
    assert all(np.isfinite(v) and 0 < v < 10 for v in val_losses)


def test_init_from_continues_counters_and_loss(trained, tmp_path):
    base, save, _, _ = trained
    before = rundir.read_checkpoint_state(str(save), "latest")
    cont = tmp_path / "cont"
    r = run(
        [
            "train",
            "--data_dir",
            str(base / "data"),
            "--init_from",
            str(save),
            "--save_dir",
            str(cont),
            "--log_dir",
            str(tmp_path / "logs"),
            "--num_epochs",
            TRAINED_EPOCHS + 1,
            "--batch_size",
            "4",
            "--seq_length",
            "16",
            "--no_jit_compile",
        ]
    )
    assert r.exit_code == 0, r.output
    after = rundir.read_checkpoint_state(str(cont), "latest")
    epochs = TRAINED_EPOCHS + 1
    assert after["epoch"] == epochs and after["step"] == before["step"] * epochs // TRAINED_EPOCHS
    assert f"epoch {epochs}/{epochs}" in r.output and "epoch 1/" not in r.output
    assert after["train_loss"] < before["train_loss"] + 0.3  # continues, no jump back
    # the saved architecture was inherited without repeating --rnn_size
    assert json.loads((cont / "config.json").read_text())["model"]["rnn_size"] == 16


def test_init_from_refuses_other_architecture_and_vocabulary(trained, tmp_path):
    base, save, _, _ = trained
    r = run(
        [
            "train",
            "--data_dir",
            str(base / "data"),
            "--init_from",
            str(save),
            "--save_dir",
            str(tmp_path / "x"),
            "--rnn_size",
            "32",
        ]
    )
    assert r.exit_code == 2 and "rnn_size" in r.output
    other = tmp_path / "other"
    other.mkdir()
    (other / "input.txt").write_text("zzzz qqqq " * 100)
    r = run(
        [
            "train",
            "--data_dir",
            str(other),
            "--init_from",
            str(save),
            "--save_dir",
            str(tmp_path / "y"),
        ]
    )
    assert r.exit_code == 2 and "vocabulary" in r.output and "'z'" in r.output


def test_existing_run_is_not_overwritten(trained):
    base, save, _, _ = trained
    before = (save / "latest.ckpt.h5").read_bytes()
    r = run(["train", "--data_dir", str(base / "data"), "--save_dir", str(save)])
    assert r.exit_code == 2 and "--init_from" in r.output
    assert (save / "latest.ckpt.h5").read_bytes() == before


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["sample", "--prime", "KING€"], 2, "'€'"),
        (["sample", "--temperature", "0"], 2, "temperature"),
        (["sample", "--top_p", "1.5"], 2, "top_p"),
        (["sample", "--top_p", "0"], 2, "top_p"),
    ],
)
def test_bad_sample_input(trained, args, code, message):
    _, save, _, _ = trained
    r = run([*args, "--save_dir", str(save)])
    assert r.exit_code == code and message in r.output


def test_corrupt_checkpoint_gives_runtime_error(trained, tmp_path):
    import shutil

    _, save, _, _ = trained
    broken = tmp_path / "broken"
    shutil.copytree(save, broken)
    (broken / "best.ckpt.h5").write_bytes(b"not hdf5 at all")
    r = run(["sample", "--save_dir", str(broken), "-n", "5"])
    assert r.exit_code == 1 and "is damaged" in r.output and "--checkpoint latest" in r.output
    assert len(r.output.strip().splitlines()) == 1
    (broken / "checkpoints.json").unlink()  # a run from before checksums: HDF5 itself complains
    r = run(["sample", "--save_dir", str(broken), "-n", "5"])
    assert r.exit_code == 1 and "corrupt or truncated" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = run(["sample", "--save_dir", str(broken), "-n", "5", "--checkpoint", "latest"])
    assert r.exit_code == 0  # the other checkpoint still works


@pytest.mark.parametrize(
    "setup, args, code, message",
    [
        ("missing_dir", [], 2, "does not exist"),
        ("missing_input", [], 2, "input.txt not found"),
        ("empty", [], 1, "is empty"),
        ("binary", [], 1, "offset 3"),
        ("short", [], 2, "--batch_size"),
        ("ok", ["--batch_size", "0"], 2, "batch_size"),
        ("ok", ["--rnn_size", "-3"], 2, "rnn_size"),
        ("ok", ["--seq_length", "0"], 2, "seq_length"),
    ],
)
def test_bad_train_input(tmp_path, setup, args, code, message):
    d = tmp_path / "d"
    if setup != "missing_dir":
        d.mkdir()
    content = {"empty": b"", "binary": b"abc\xfe\xff", "short": b"tiny text", "ok": b"x" * 50}
    if setup in content:
        (d / "input.txt").write_bytes(content[setup])
    r = run(
        [
            "train",
            "--data_dir",
            str(d),
            "--save_dir",
            str(tmp_path / "s"),
            "--log_dir",
            str(tmp_path / "l"),
            *args,
        ]
    )
    assert r.exit_code == code, r.output
    assert message in r.output
    assert not (tmp_path / "s" / "latest.ckpt.h5").exists()


def test_sample_without_checkpoint(tmp_path):
    r = run(["sample", "--save_dir", str(tmp_path)])
    assert r.exit_code == 2 and "no checkpoint" in r.output


def test_version_and_module_entry_point():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "kerasgen", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert "kerasgen, version" in out


def test_ctrl_c_saves_and_exits_130(data_dir, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    save = tmp_path / "save"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kerasgen",
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(save),
            "--log_dir",
            str(tmp_path / "logs"),
            "--num_epochs",
            "100000",
            *TINY_TRAIN,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (save / "latest.ckpt.h5").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (save / "latest.ckpt.h5").exists(), "no checkpoint within 120 s"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, output[-2000:]
    assert "checkpoint saved" in output and "Traceback" not in output
    state = rundir.read_checkpoint_state(str(save), "latest")
    assert state["step"] >= 5
