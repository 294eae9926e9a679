"""The Python API: kerasgen.train, kerasgen.load and the model they return."""

import json
import math
import pathlib
import subprocess
import sys

import pytest
from runner import run

import kerasgen

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_api_example() -> str:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow  # trains through the README's own example (about 20 s)
def test_the_readme_example_runs_as_written(tmp_path):
    corpus = ROOT / "data" / "tinyshakespeare" / "input.txt"
    if not corpus.exists():
        pytest.skip("tiny Shakespeare is not in data/tinyshakespeare (see the README)")
    (tmp_path / "data" / "tinyshakespeare").mkdir(parents=True)
    (tmp_path / "data" / "tinyshakespeare" / "input.txt").symlink_to(corpus)
    proc = subprocess.run(
        [sys.executable, "-c", readme_api_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The default progress first (as fit shows it), then what the example prints.
    progress, printed = proc.stdout.split("model saved in save/api\n", 1)
    assert "parameters" in progress and "epoch 1/1" in progress
    assert printed.startswith("KING")
    assert math.isfinite(float(printed.strip().splitlines()[-1]))
    assert (tmp_path / "save" / "api" / "best.ckpt.h5").exists()


def test_train_on_a_string_quietly_then_generate_stream_and_evaluate(tiny_text, tmp_path, capfd):
    model = kerasgen.train(
        text=tiny_text,
        save_dir=str(tmp_path / "run"),
        num_epochs=2,
        rnn_size=16,
        batch_size=4,
        seq_length=16,
        seed=1,
        log_dir=str(tmp_path / "logs"),
        verbose=False,
    )
    out, err = capfd.readouterr()  # TensorFlow may log on its first import; kerasgen nothing
    assert out == "" and "epoch" not in err and "parameters" not in err
    assert isinstance(model, kerasgen.TrainedModel) and model.checkpoint == "best"
    text = model.generate(100, prime="KING", seed=3)
    assert text.startswith("KING") and len(text) == 104
    assert "".join(model.stream(100, prime="KING", seed=3)) == text
    assert kerasgen.load(str(tmp_path / "run")).generate(100, prime="KING", seed=3) == text
    speech = model.generate(400, prime="KING", seed=3, stop="\n\n")
    assert "\n\n" not in speech and text.startswith(speech[:100])
    result = model.evaluate()
    cli = run(["evaluate", "--save_dir", str(tmp_path / "run"), "--json"])
    assert json.loads(cli.stdout) == result  # the API's dict is what the CLI prints
    assert result["targets"] == round(len(tiny_text) * 0.1) - 1


def test_api_errors_name_the_fix(tiny_text, tmp_path):
    with pytest.raises(ValueError, match="unknown option rnn_sise"):
        kerasgen.train(text=tiny_text, save_dir=str(tmp_path / "x"), rnn_sise=16)
    with pytest.raises(ValueError, match="data_dir or text"):
        kerasgen.train("data", text=tiny_text)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kerasgen.load(str(tmp_path / "nothing"))
