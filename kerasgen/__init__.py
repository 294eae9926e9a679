"""kerasgen: text generation with Keras, by character, word or subword: stateful RNNs,
a bigram baseline and a small transformer.

The Python API::

    import kerasgen
    model = kerasgen.train("data/tinyshakespeare", save_dir="save/x", num_epochs=1)
    text = model.generate(200, prime="KING", seed=1)   # the prime and 200 characters
    model = kerasgen.load("save/x")                # any run folder, later
    kerasgen.export("save/x", "exported/x/1")      # a SavedModel for TensorFlow Serving
    model.serve(port=8000)                         # an OpenAI-compatible API and a page

Data flows one way, each step in its own module:

    text file -> vocab (Vocabulary) + data (ids, stream batches)
      -> model (Keras Functional model) -> training (the loop; steps: compiled steps)
      -> rundir (run folder: config, vocabulary, checkpoints)
      -> run (the one path from a run folder to a ready model)
      -> sampling (the generation loop over families: each family's step) -> the Click
      CLI in ``kerasgen_cli``, or engine + server (many streams batched, over HTTP)
"""

__version__ = "0.1.0"

# After __version__, which rundir reads.
from kerasgen.export import export
from kerasgen.run import TrainedModel, load
from kerasgen.training import train

__all__ = ["TrainedModel", "__version__", "export", "load", "train"]
