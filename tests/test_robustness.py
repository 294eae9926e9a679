"""Nothing lost, nothing silently wrong: what users and hostile inputs did to earlier versions.

Each test names the problem it covers. Tiny models throughout.
"""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
from runner import run

from kerasgen import rundir


def train_args(data, save, tmp_path, tiny_train, *extra):
    return [
        "train",
        "--data_dir",
        str(data),
        "--save_dir",
        str(save),
        "--log_dir",
        str(tmp_path / "logs"),
        *tiny_train,
        *extra,
    ]


def checkpoint_bytes(save):
    return {w: (save / f"{w}.ckpt.h5").read_bytes() for w in ("best", "latest")}


def python_kerasgen(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "kerasgen", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


# 1. --init_from without --save_dir wrote into the trained run in save/.
@pytest.mark.slow  # trains twice, refused once; test_cli's --init_from tests are in the
# default run
def test_init_from_continues_in_place_and_never_replaces_another_run(own_run, tmp_path, tiny_train):
    data, save = own_run
    other = tmp_path / "other"
    shutil.copytree(save, other)
    before = checkpoint_bytes(other)
    r = run(train_args(data, other, tmp_path, tiny_train, "--init_from", str(save)))
    assert r.exit_code == 2 and "already holds a trained model" in r.output
    assert checkpoint_bytes(other) == before
    r = run(
        [
            "train",
            "--init_from",
            str(save),
            "--num_epochs",
            "4",
            "--log_dir",
            str(tmp_path / "logs"),
        ]
    )  # no --save_dir: continues the run where it is
    assert r.exit_code == 0, r.output
    assert rundir.read_checkpoint_state(str(save), "latest")["epoch"] == 4
    # 9. Resuming takes every recorded setting not typed again (the data folder too).
    recorded = json.loads((save / "config.json").read_text())["train"]
    assert recorded["data_dir"] == str(data) and recorded["batch_size"] == 4
    r = run(train_args(data, other, tmp_path, tiny_train, "--overwrite", "--num_epochs", "1"))
    assert r.exit_code == 0 and checkpoint_bytes(other) != before  # replaced when asked


# 2. --learning_rate 1e38: NaN weights were saved as the best checkpoint, exit 0.
def test_a_diverging_run_stops_at_once_and_keeps_the_earlier_checkpoints(own_run, tmp_path):
    _data, save = own_run
    before = checkpoint_bytes(save)
    r = run(
        [
            "train",
            "--init_from",
            str(save),
            "--learning_rate",
            "1e38",
            "--num_epochs",
            "5",
            "--log_dir",
            str(tmp_path / "logs"),
        ]
    )
    assert r.exit_code == 1, r.output
    line = r.output.strip().splitlines()[-1]
    assert "diverged at step" in line and "--learning_rate" in line
    assert checkpoint_bytes(save) == before


# 3. SIGTERM: exit 143 with no checkpoint; a kill during a save left a .tmp file forever.
@pytest.mark.slow  # a training process, then a second run (test_cli's Ctrl-C test covers
# a signal's save in the default run)
def test_sigterm_saves_the_latest_checkpoint_and_leftovers_are_removed(
    data_dir, tmp_path, tiny_train
):
    save = tmp_path / "save"
    proc = python_kerasgen(
        *train_args(data_dir, save, tmp_path, tiny_train, "--num_epochs", "100000")[0:],
        "--save_every",
        "0",
    )
    try:
        deadline = time.time() + 120
        while not (save / "latest.ckpt.h5").exists() and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "checkpoint saved" in err and "Traceback" not in err
    assert rundir.read_checkpoint_state(str(save), "latest")["step"] >= 20
    leftover = save / ".latest.ckpt.h5.abc123.tmp.h5"
    leftover.write_bytes(b"half a checkpoint")
    r = run(
        [
            "train",
            "--init_from",
            str(save),
            "--num_epochs",
            "1",
            "--log_dir",
            str(tmp_path / "logs"),
        ]
    )
    assert r.exit_code == 0, r.output
    assert not leftover.exists()


# 4. Two trainers on one run folder both "succeeded".
def test_a_second_trainer_is_refused_and_a_dead_ones_lock_is_taken_over(own_run, tmp_path):
    import socket

    _, save = own_run
    lock = save / ".lock"
    lock.write_text(
        json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-01-01 00:00:00"}
        )
    )
    before = checkpoint_bytes(save)
    r = run(
        [
            "train",
            "--init_from",
            str(save),
            "--num_epochs",
            "4",
            "--log_dir",
            str(tmp_path / "logs"),
        ]
    )
    assert r.exit_code == 1 and f"process {os.getpid()} on {socket.gethostname()}" in r.output
    assert len(r.output.strip().splitlines()) == 1 and checkpoint_bytes(save) == before
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs
    lock.write_text(
        json.dumps({"pid": gone.pid, "host": socket.gethostname(), "since": "2026-01-01 00:00:00"})
    )
    r = run(
        [
            "train",
            "--init_from",
            str(save),
            "--num_epochs",
            "4",
            "--log_dir",
            str(tmp_path / "logs"),
        ]
    )
    assert r.exit_code == 0, r.output
    assert not lock.exists()  # released at the end


# 6. A full disk during a save: a 60-line traceback.
@pytest.mark.slow  # a training process of its own, starting TensorFlow
def test_a_failed_write_is_one_line_and_the_earlier_checkpoints_stay(own_run, tmp_path):
    _, save = own_run
    before = checkpoint_bytes(save)
    limit = min(len(b) for b in before.values()) // 2  # bytes: checkpoints cannot be written

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = python_kerasgen(
        "train",
        "--init_from",
        str(save),
        "--num_epochs",
        "4",
        "--log_dir",
        str(tmp_path / "logs"),
        preexec_fn=small_files,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "could not write" in lines[-1]
    assert "File too large" in lines[-1] or "space" in lines[-1]
    assert checkpoint_bytes(save) == before
    assert not [p for p in os.listdir(save) if ".tmp" in p]


# 7. Flipped bytes inside best.ckpt.h5 loaded without complaint.
def test_a_damaged_checkpoint_is_refused_by_its_checksum(own_run):
    _, save = own_run
    path = save / "best.ckpt.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    r = run(["sample", "--save_dir", str(save), "-n", "5"])
    assert r.exit_code == 1
    assert r.output.strip() == (
        f"Error: {path} is damaged (its sha256 does not match "
        "checkpoints.json); use --checkpoint latest or retrain"
    )
    assert (
        run(["sample", "--save_dir", str(save), "-n", "5", "--checkpoint", "latest"]).exit_code == 0
    )


# 8. Every command printed about 7 TensorFlow log lines on stderr.
@pytest.mark.slow  # two processes, each starting TensorFlow (about 13 s)
def test_no_tensorflow_log_lines_unless_verbose(trained_run):
    _, save = trained_run
    proc = python_kerasgen("sample", "--save_dir", str(save), "-n", "20", "--seed", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and len(out) == 21
    assert err == "", err
    env = {**os.environ, "KERASGEN_VERBOSE": "1"}
    proc = python_kerasgen("sample", "--save_dir", str(save), "-n", "20", "--seed", "1", env=env)
    assert proc.communicate(timeout=120)[0] == out  # the same text either way


# 12. Small things: 10%% in --help, deprecated calls, unbounded dependencies.
@pytest.mark.slow  # a process of its own, starting TensorFlow
def test_help_deprecations_and_dependency_bounds(trained_run):
    r = run(["train", "--help"])
    assert r.exit_code == 0 and "%%" not in r.output and "10%" in r.output
    _, save = trained_run
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "always::DeprecationWarning",
            "-m",
            "kerasgen",
            "sample",
            "--save_dir",
            str(save),
            "-n",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = [
        line
        for line in proc.stderr.splitlines()
        if "Warning" in line and ("kerasgen" in line or "/cli/" in line)
    ]
    assert not ours, ours
    setup = open(os.path.join(os.path.dirname(__file__), "..", "setup.py")).read()
    requirements = re.findall(
        r'"([a-z0-9_-]+)([^"]*)"', setup.split("install_requires=")[1].split("]")[0]
    )
    assert requirements and all("<" in bounds for _, bounds in requirements), requirements
