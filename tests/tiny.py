"""The tiny text and model the tests train on (the fixtures ``tiny_text``, ``tiny_train``
and ``data_dir`` in conftest.py hand them out; tests that need them at import time, in a
parametrisation or a module constant, import them from here)."""

# A small text with the shape of the real corpus (NAME: lines, blank lines).
TINY_TEXT = (
    "KING RICHARD:\nNow is the winter of our discontent,\nmade glorious summer.\n\n"
    "QUEEN:\nWhat, is the king gone? Then go we too.\n\n"
) * 12

# kerasgen train flags for a tiny, quick model.
TINY_TRAIN = [
    "--rnn_size",
    "16",
    "--num_layers",
    "2",
    "--batch_size",
    "4",
    "--seq_length",
    "16",
    "--save_every",
    "5",
    "--seed",
    "1",
    "--no_jit_compile",
]
TRAINED_EPOCHS = 3  # of the session's trained run (conftest.trained_training)
