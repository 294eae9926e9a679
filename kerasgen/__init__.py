"""kerasgen: character-level (and word-level) text generation with Keras: stateful RNNs,
a bigram baseline and a small transformer.

Data flows one way, each step in its own module:

    text file -> vocab (Vocabulary) + data (ids, stream batches)
      -> model (Keras Functional model) -> train (training loop)
      -> rundir (run folder: config, vocabulary, checkpoints)
      -> sampling (generate text) -> the Click CLI in ``kerasgen_cli``
"""

__version__ = "0.1.0"
