"""kerasgen: text generation with Keras, by character, word or subword: stateful RNNs,
a bigram baseline and a small transformer.

The Python API::

    import kerasgen
    model = kerasgen.load("save")                  # a run folder written by training
    print(model.generate(200, prime="KING", seed=1))

Data flows one way, each step in its own module:

    text file -> vocab (Vocabulary) + data (ids, stream batches)
      -> model (Keras Functional model) -> train (training loop)
      -> rundir (run folder: config, vocabulary, checkpoints)
      -> run (the one path from a run folder to a ready model)
      -> sampling (generate text) -> the Click CLI in ``kerasgen_cli``
"""

__version__ = "0.1.0"

from kerasgen.run import TrainedModel, load  # noqa: E402  (after __version__, which rundir reads)

__all__ = ["TrainedModel", "load", "__version__"]
