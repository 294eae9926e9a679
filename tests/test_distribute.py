"""tf.distribute: 2 logical CPU replicas, 2 worker processes, mixed precision.

Strategies need a fresh TensorFlow runtime (logical devices and multi-worker
clusters are fixed when it starts), so those tests run in subprocesses.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from runner import run
from tiny import TINY_TEXT, TINY_TRAIN

from kerasgen import rundir

TIMEOUT_S = 240  # any subprocess here; they are killed after it

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from kerasgen import distribute
    from kerasgen.steps import DistributedSteps
    from kerasgen.settings import TrainConfig
    from kerasgen.training import run_training as train

    class Losses(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.losses, self.val = [], []
        def on_train_batch_end(self, step, logs=None):
            self.losses.append(float(logs["loss"]))
        def on_epoch_end(self, epoch, logs=None):
            self.val.append(float(logs["val_loss"]))

    data_dir, out = sys.argv[1], sys.argv[2]
    result = {}
    for name in ("default", "mirrored"):
        cb = Losses()
        config = TrainConfig(data_dir=data_dir, save_dir=f"{out}/{name}", log_dir=f"{out}/logs",
                             batch_size=4, seq_length=16, num_epochs=2, save_every=0, seed=3,
                             strategy=name)
        train(config, {"rnn_size": 16}, callbacks=[cb])
        result[name] = {"losses": cb.losses, "val": cb.val}

    # Row continuity: replica r gets rows r*b .. (r+1)*b - 1 of every batch.
    strategy = distribute.make_strategy("mirrored")
    result["replicas"] = strategy.num_replicas_in_sync
    with strategy.scope():
        from kerasgen.model import ModelConfig, build_model
        model = build_model(ModelConfig(vocab_size=5, rnn_size=4), 2)
        steps = DistributedSteps(strategy, model, keras.optimizers.Adam(), 4)
    batch = np.arange(4 * 3).reshape(4, 3)
    result["rows"] = [t.numpy().tolist() for t in
                      strategy.experimental_local_results(steps._split(batch))]
    print("RESULT " + json.dumps(result))
""")


def run_script(script, *args, env=None):
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.slow  # several processes, each starting TensorFlow
def test_mirrored_over_two_cpus_matches_one_device(data_dir, tmp_path):
    result = run_script(MIRRORED_SCRIPT, str(data_dir), str(tmp_path))
    assert result["replicas"] == 2
    assert result["rows"] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    one, two = result["default"], result["mirrored"]
    assert len(one["losses"]) == len(two["losses"]) > 10
    # Same streams in the same state on each replica, gradients summed: the same
    # training, step after step, to float rounding.
    np.testing.assert_allclose(two["losses"], one["losses"], atol=2e-4)
    np.testing.assert_allclose(two["val"], one["val"], atol=2e-4)
    # A run trained on 2 replicas samples on one CPU with the ordinary command.
    r = run(["sample", "--save_dir", str(tmp_path / "mirrored"), "-n", "40", "--seed", "1"])
    assert r.exit_code == 0 and len(r.output) >= 40


def test_auto_strategy_is_one_device_on_a_cpu():
    from kerasgen.distribute import is_chief, make_strategy

    strategy = make_strategy("auto")
    assert strategy.num_replicas_in_sync == 1 and is_chief(strategy)


def test_bad_strategy_settings_are_usage_errors(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    r = run(
        [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "s"),
            "--strategy",
            "multiworker",
        ],
    )
    assert r.exit_code == 2 and "TF_CONFIG" in r.output
    r = run(
        [
            "train",
            "--data_dir",
            str(data_dir),
            "--save_dir",
            str(tmp_path / "s"),
            "--strategy",
            "mirrored",
            "--mixed_precision",
        ],
    )
    assert r.exit_code == 2 and "--mixed_precision" in r.output


def test_mixed_precision_trains_with_float32_logits(data_dir, tmp_path):
    import keras

    from kerasgen.model import ModelConfig, build_model
    from kerasgen.settings import TrainConfig
    from kerasgen.training import run_training as train

    config = TrainConfig(
        data_dir=str(data_dir),
        save_dir=str(tmp_path / "s"),
        log_dir=str(tmp_path / "logs"),
        batch_size=4,
        seq_length=16,
        num_epochs=1,
        seed=1,
        mixed_precision=True,
    )
    result = train(config, {"rnn_size": 16})
    assert np.isfinite(result.train_loss) and np.isfinite(result.best_val_loss)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(ModelConfig(vocab_size=7, rnn_size=8), 2)
        assert model.get_layer("lstm_1").compute_dtype == "float16"
        assert model(np.zeros((2, 3), np.int32)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_workers(tmp_path, extra_args, timeout_s="10"):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "input.txt").write_text(TINY_TEXT * 4, encoding="utf-8")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            KERASGEN_COLLECTIVE_TIMEOUT_S=timeout_s,
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        log = open(tmp_path / f"worker{index}.log", "w")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kerasgen",
                    "train",
                    "--strategy",
                    "multiworker",
                    "--data_dir",
                    str(data),
                    "--save_dir",
                    str(tmp_path / "save"),
                    "--log_dir",
                    str(tmp_path / "logs"),
                    *TINY_TRAIN,
                    *extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
    return procs


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.slow  # several processes, each starting TensorFlow
def test_multiworker_trains_and_the_chief_checkpoint_samples(tmp_path):
    procs = start_workers(tmp_path, ["--num_epochs", "2"])
    try:
        codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    finally:
        stop(procs)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    save = tmp_path / "save"
    assert rundir.read_checkpoint_state(str(save), "latest")["epoch"] == 2
    assert not (tmp_path / "logs").exists() or len(os.listdir(tmp_path / "logs")) == 1  # chief only
    r = run(["sample", "--save_dir", str(save), "-n", "30", "--seed", "2"])
    assert r.exit_code == 0 and len(r.output) >= 30


@pytest.mark.slow  # several processes, each starting TensorFlow
def test_killed_worker_ends_the_job_with_a_clear_error_and_a_resumable_checkpoint(tmp_path):
    procs = start_workers(tmp_path, ["--num_epochs", "10000", "--save_every", "3"])
    latest = tmp_path / "save" / "latest.ckpt.h5"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not latest.exists() and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.5)
        assert latest.exists(), (tmp_path / "worker0.log").read_text()
        procs[1].send_signal(signal.SIGKILL)
        code = procs[0].wait(timeout=TIMEOUT_S)
    finally:
        stop(procs)
    log = (tmp_path / "worker0.log").read_text()
    assert code == 1, log[-3000:]
    assert "distributed training failed" in log and "--init_from" in log
    # The checkpoint is intact and resumable on one device.
    r = run(
        [
            "train",
            "--init_from",
            str(tmp_path / "save"),
            "--save_dir",
            str(tmp_path / "save"),
            "--data_dir",
            str(tmp_path / "data"),
            "--log_dir",
            str(tmp_path / "logs"),
            "--num_epochs",
            "1",
            "--batch_size",
            "4",
            "--seq_length",
            "16",
        ]
    )
    assert r.exit_code == 0, r.output
