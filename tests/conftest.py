import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from tiny import TINY_TEXT, TINY_TRAIN, TRAINED_EPOCHS


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


@pytest.fixture(scope="session")
def tiny_text():
    """A small text with the shape of tiny Shakespeare."""
    return TINY_TEXT


@pytest.fixture(scope="session")
def tiny_train():
    """``kerasgen train`` flags for a tiny, quick model."""
    return list(TINY_TRAIN)


@pytest.fixture(scope="session")
def trained_training(tmp_path_factory):
    """A tiny run trained once per session through the CLI: (base folder, run folder,
    TensorBoard folder, what ``kerasgen train`` printed); the text is in base/data.

    Tests must not change it; copy it first (``own_run``) to damage it.
    """
    from runner import run

    base = tmp_path_factory.mktemp("trained")
    (base / "data").mkdir()
    (base / "data" / "input.txt").write_text(TINY_TEXT, encoding="utf-8")
    save, logs = base / "save", base / "logs"
    result = run(
        ["train", "--data_dir", base / "data", "--save_dir", save, "--log_dir", logs]
        + ["--num_epochs", TRAINED_EPOCHS, *TINY_TRAIN]
    )
    assert result.exit_code == 0, result.output
    return base, save, logs, result.output


@pytest.fixture(scope="session")
def trained_run(trained_training):
    """The session's trained run: (data folder, run folder)."""
    base, save, _, _ = trained_training
    return base / "data", save


@pytest.fixture
def own_run(trained_run, tmp_path):
    """A copy of the session's trained run that a test may change: (data folder, copy)."""
    import shutil

    data, save = trained_run
    copy = tmp_path / "run"
    shutil.copytree(save, copy)
    return data, copy


@pytest.fixture(scope="session")
def old_run():
    """A run folder written by kerasgen 0.1.0, before runs recorded a preamble."""
    import pathlib

    return pathlib.Path(__file__).parent / "fixtures" / "run-0.1.0"
