import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# A small text with the shape of the real corpus (NAME: lines, blank lines).
TINY_TEXT = (
    "KING RICHARD:\nNow is the winter of our discontent,\nmade glorious summer.\n\n"
    "QUEEN:\nWhat, is the king gone? Then go we too.\n\n"
) * 12


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "input.txt").write_text(TINY_TEXT, encoding="utf-8")
    return d


TINY_TRAIN = ["--rnn_size", "16", "--num_layers", "2", "--batch_size", "4",
              "--seq_length", "16", "--save_every", "5", "--seed", "1", "--no_jit_compile"]
