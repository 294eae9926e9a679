"""The third hostile pass: a fresh install, careless hands and other programs.

Each test names what a user met before it was fixed. Tiny models throughout; the
session's trained run (``trained_run``) is copied before anything is damaged.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from runner import run

import kerasgen
from kerasgen import data, idcache, rundir
from kerasgen.checks import MAX_SEED
from kerasgen.errors import ParameterError


def tree_bytes(folder: pathlib.Path) -> dict:
    """Every file below ``folder`` (hidden ones too) -> its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


# 1. kerasgen.train's default progress imported keras.utils.io_utils, which Keras does not
#    export: the API's default path raised ImportError on a fresh install.
def test_the_api_trains_with_its_default_progress(tiny_text, tmp_path, capsys):
    model = kerasgen.train(
        text=tiny_text,
        save_dir=str(tmp_path / "run"),
        rnn_size=16,
        num_layers=1,
        num_epochs=1,
        batch_size=4,
        seq_length=16,
        log_dir=str(tmp_path / "logs"),
    )
    out = capsys.readouterr().out
    assert "parameters" in out and "epoch 1/1  step 20/20" in out and "done: 20 steps" in out
    assert model.generate(20, prime="KING", seed=1).startswith("KING")


def test_the_default_progress_draws_a_keras_bar_on_a_terminal(tiny_text, tmp_path, capsys):
    from kerasgen.progress import training_progress

    kerasgen.train(
        text=tiny_text,
        save_dir=str(tmp_path / "run"),
        rnn_size=16,
        num_layers=1,
        num_epochs=1,
        batch_size=4,
        seq_length=16,
        log_dir=str(tmp_path / "logs"),
        callbacks=[training_progress(live=True)],
    )
    out = capsys.readouterr().out
    assert "Epoch 1/1\n" in out and "20/20" in out and "/step - loss:" in out
    assert "epoch 1/1  step 20/20" in out  # the line after the bar, with chars/s


# 2. train --overwrite deleted the trained run's checkpoints before it found that
#    --data_dir was mistyped (or anything else wrong).
def test_a_refused_overwrite_leaves_the_trained_run_byte_identical(own_run, tmp_path, tiny_train):
    data_dir, save = own_run
    before = tree_bytes(save)
    base = [
        "train",
        "--save_dir",
        str(save),
        "--log_dir",
        str(tmp_path / "logs"),
        "--overwrite",
        *tiny_train,
    ]
    r = run([*base, "--data_dir", str(tmp_path / "no_such_folder")])
    one_error_line(r, 2)
    assert tree_bytes(save) == before
    (tmp_path / "a_file").write_text("")
    r = run([*base, "--data_dir", str(data_dir), "--log_dir", str(tmp_path / "a_file" / "x")])
    assert "could not write TensorBoard logs" in one_error_line(r, 1)
    assert tree_bytes(save) == before
    r = run([*base, "--data_dir", str(data_dir), "--batch_size", "400"])  # text too short
    one_error_line(r, 2)
    assert tree_bytes(save) == before
    # A text given as a string is written into the run folder, so the old run is set
    # aside first; the new one fails (too short for a batch) and the old one comes back.
    with pytest.raises(ValueError, match="too short"):
        kerasgen.train(
            text="KING:\nNo.\n",
            save_dir=str(save),
            overwrite=True,
            log_dir=str(tmp_path / "logs"),
            verbose=False,
        )
    assert tree_bytes(save) == before


def test_an_overwrite_replaces_the_run_once_the_new_one_has_a_checkpoint(
    own_run, tmp_path, tiny_train
):
    data_dir, save = own_run
    before = tree_bytes(save)
    r = run(
        [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(save),
            "--log_dir",
            str(tmp_path / "logs"),
            "--overwrite",
            "--num_epochs",
            "1",
            *tiny_train,
            "--seed",
            "7",
        ]
    )
    assert r.exit_code == 0, r.output
    after = tree_bytes(save)
    assert after["latest.ckpt.h5"] != before["latest.ckpt.h5"]
    assert rundir.read_checkpoint_state(str(save), "latest")["step"] == 20
    assert not any(name.startswith(".replaced") for name in os.listdir(save))


def test_a_kill_during_a_replacement_is_finished_by_the_next_reader(own_run):
    _, save = own_run
    before = tree_bytes(save)
    # Killed after the old run was set aside, before the new one saved a checkpoint:
    # the new run had written its config. The next reader puts the old run back.
    rundir.Replacement.begin(str(save))
    (save / "config.json").write_text("{}")
    assert not (save / "best.ckpt.h5").exists()
    r = run(["sample", "--save_dir", str(save), "-n", "10", "--seed", "1"])
    assert r.exit_code == 0 and r.output.strip(), r.output
    assert tree_bytes(save) == before
    # Killed after the new run's first checkpoint, before the old run was deleted.
    rundir.Replacement.begin(str(save))
    shutil.copy(save / ".replaced" / "latest.ckpt.h5", save / "latest.ckpt.h5")
    shutil.copy(save / ".replaced" / "checkpoints.json", save / "checkpoints.json")
    for name in ("config.json", "vocab.json"):
        shutil.copy(save / ".replaced" / name, save / name)
    assert rundir.Replacement.recover(str(save)) is None
    assert not (save / ".replaced").exists()
    assert (save / "latest.ckpt.h5").exists() and not (save / "best.ckpt.h5").exists()


# 3. Two streams of one loaded model, read in turns, mixed their text after one chunk.
@pytest.mark.slow  # two streams of 400 characters, alone and in turn;
# test_families' streams-in-turn test covers one sampler's streams in the default run
def test_two_streams_of_one_loaded_model_keep_their_own_text(trained_run):
    _, save = trained_run
    model = kerasgen.load(str(save))
    kinds = [
        dict(prime="KING", seed=1, temperature=1.5),
        dict(prime="QUEEN:\n", seed=2, constrain="python"),
    ]
    alone = [model.generate(400, **kind) for kind in kinds]
    live = dict(enumerate(model.stream(400, **kind) for kind in kinds))
    texts = ["", ""]
    while live:  # one piece of each in turn
        for k in list(live):
            piece = next(live[k], None)
            if piece is None:
                del live[k]
            else:
                texts[k] += piece
    assert texts == alone and alone[0] != alone[1]


# 4. The id cache beside the text was trusted: damaged bytes crashed training with a
#    TensorFlow traceback (an id outside the vocabulary) or trained on wrong ids.
@pytest.mark.parametrize(
    "damage",
    [pytest.param("outside the vocabulary", marks=pytest.mark.slow), "inside the vocabulary"],
)
def test_a_damaged_data_cache_is_rebuilt(data_dir, tmp_path, tiny_train, damage):
    good = np.array(data.load_corpus(str(data_dir)).ids)
    path = data_dir / idcache.CACHE_IDS
    raw = bytearray(path.read_bytes())
    raw[-10] = 250 if damage == "outside the vocabulary" else (raw[-10] + 1) % int(good.max())
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(np.array(data.load_corpus(str(data_dir)).ids), good)
    path.write_bytes(bytes(raw))
    r = run(
        [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "save"),
            "--log_dir",
            str(tmp_path / "logs"),
            "--num_epochs",
            "1",
            *tiny_train,
        ]
    )
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(path), good)


# 5. Files of a run folder edited into another JSON shape gave tracebacks.
SHAPES = ["[]", "5", '"text"', "null", "not json", ""]
DAMAGE = (
    [("checkpoints.json", c) for c in SHAPES + ['{"best.ckpt.h5": 5}', '{"best.ckpt.h5": [1]}']]
    + [
        ("config.json", c)
        for c in SHAPES + ['{"model": []}', '{"model": {}}', '{"model": {"vocab_size": "x"}}']
    ]
    + [("vocab.json", c) for c in SHAPES + ['{"chars": 5}', '{"level": "word"}']]
)


@pytest.mark.parametrize("name,content", DAMAGE)
def test_an_edited_run_folder_file_is_one_error_line(own_run, name, content):
    _, save = own_run
    (save / name).write_text(content)
    r = run(["sample", "--save_dir", str(save), "-n", "5", "--seed", "1"])
    assert str(save) in one_error_line(r, 1)


def test_a_checkpoint_whose_counters_are_not_an_object_is_one_error_line(own_run):
    import h5py

    _, save = own_run
    os.remove(save / "checkpoints.json")  # an edit, not damage on disk
    with h5py.File(save / "best.ckpt.h5", "r+") as f:
        f.attrs["state"] = "[1, 2]"
    r = run(["sample", "--save_dir", str(save), "-n", "5"])
    assert "corrupt" in one_error_line(r, 1)


# 6. Outputs that cannot be written gave tracebacks.
def test_outputs_that_cannot_be_written_are_one_error_line(trained_run, tmp_path, tiny_train):
    data_dir, save = trained_run
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    r = run(["export", "--save_dir", str(save), "--out", str(blocker / "exported")])
    assert "a_file is a file, not a folder" in one_error_line(r, 1)
    r = run(
        [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "new"),
            "--log_dir",
            str(blocker / "logs"),
            *tiny_train,
        ]
    )
    assert "--log_dir" in one_error_line(r, 1)
    assert not (tmp_path / "new").exists()
    r = run(["sample", "--save_dir", str(save), "-n", "5", "--output", str(blocker / "out")])
    one_error_line(r, 1)


# 7. `kerasgen sample | head` printed "Error: Broken pipe" and exited 1.
@pytest.mark.slow  # a process of its own, starting TensorFlow
def test_a_closed_pipe_ends_sampling_quietly(trained_run):
    _, save = trained_run
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kerasgen",
            "sample",
            "--save_dir",
            str(save),
            "-n",
            "1000000",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stdout.read(20)
    proc.stdout.close()  # as head does once it has its lines
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert len(first) == 20
    assert proc.returncode == 128 + signal.SIGPIPE and err == "", err


# 8. An out-of-range --seed gave a TensorFlow message that did not name the flag.
@pytest.mark.parametrize("command", ["sample", "evaluate", "train"])
@pytest.mark.parametrize("seed", ["-1", str(MAX_SEED + 1), str(2**64)])
def test_seeds_out_of_range_name_the_flag(trained_run, command, seed):
    data_dir, save = trained_run
    args = {
        "sample": ["sample", "--save_dir", str(save)],
        "evaluate": ["evaluate", "--save_dir", str(save)],
        "train": ["train", "--data_dir", str(data_dir), "--save_dir", str(save)],
    }[command]
    r = run([*args, "--seed", seed])
    assert r.exit_code == 2 and "--seed" in r.output, r.output


def test_the_api_checks_seeds_too(trained_run, tiny_text, tmp_path):
    _, save = trained_run
    model = kerasgen.load(str(save))
    for seed in (-1, MAX_SEED + 1, 1.5, "1"):
        with pytest.raises(ValueError, match="seed"):
            model.generate(5, seed=seed)
    with pytest.raises(ValueError, match="seed"):
        kerasgen.train(text=tiny_text, save_dir=str(tmp_path / "x"), seed=2**40)
    assert model.generate(5, seed=MAX_SEED) == model.generate(5, seed=MAX_SEED)


# Siblings: every number flag of train and sample refuses nan with a message naming it.
TRAIN_NUMBERS = [
    "--grad_clip",
    "--learning_rate",
    "--decay_rate",
    "--val_frac",
    "--input_keep_prob",
    "--output_keep_prob",
    "--dropout",
]
SAMPLE_NUMBERS = ["--temperature", "--top_p"]


@pytest.mark.parametrize("flag", TRAIN_NUMBERS + SAMPLE_NUMBERS)
def test_number_flags_refuse_nan_naming_the_flag(trained_run, tmp_path, flag):
    data_dir, save = trained_run
    if flag in SAMPLE_NUMBERS:
        args = ["sample", "--save_dir", str(save), "-n", "5"]
    else:
        args = [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "new"),
            *(["--model", "transformer"] if flag == "--dropout" else []),
        ]
    r = run([*args, flag, "nan"])
    assert r.exit_code == 2 and flag in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "new").exists()


# Siblings: numbers too big for the machine or for Keras gave tracebacks (an OOM, a
# RecursionError, an OverflowError, too many open files).
@pytest.mark.slow  # builds a model that cannot fit, then waits for TensorFlow to say so
def test_numbers_too_big_for_the_machine_are_one_line(trained_run, tmp_path):
    data_dir, save = trained_run
    train = [
        "train",
        "--data_dir",
        str(data_dir),
        "--save_dir",
        str(tmp_path / "new"),
        "--log_dir",
        str(tmp_path / "logs"),
        "--batch_size",
        "4",
        "--seq_length",
        "16",
    ]
    assert "not enough memory" in one_error_line(run([*train, "--rnn_size", "99999999999"]), 1)
    assert not (tmp_path / "new").exists()
    for flag, value in (("--num_layers", "3000"), ("--vocab_size", str(2**70))):
        r = run([*train, "--level", "bpe", flag, value])
        assert r.exit_code == 2 and flag in r.output, r.output
    with pytest.raises(ParameterError, match=r"^num_layers must be at most"):
        kerasgen.train(text="KING:\nYes.\n" * 50, save_dir=str(tmp_path / "x"), num_layers=3000)
    r = run(["sample", "--save_dir", str(save), "-n", "5", "--num_samples", str(10**9)])
    assert r.exit_code == 2 and "open files" in r.output and "--num_samples" in r.output
