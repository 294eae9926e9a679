"""kerasgen: text generation with Keras, by character, word or subword: stateful RNNs,
a bigram baseline and a small transformer.

The Python API::

    import kerasgen
    model = kerasgen.train("data/tinyshakespeare", save_dir="save/x", num_epochs=1)
    text = model.generate(200, prime="KING", seed=1)   # the prime and 200 characters
    model = kerasgen.load("save/x")                # any run folder, later
    model.evaluate(python_syntax=50)               # what `kerasgen evaluate --json` prints
    kerasgen.export("save/x", "exported/x/1")      # a SavedModel for TensorFlow Serving
    kerasgen.export("save/x", "edge/x", format="tflite")  # the step, for phones (or "onnx")
    kerasgen.load_exported("edge/x").evaluate()    # what the export costs in held-out loss
    model.serve(port=8000)                         # an OpenAI-compatible API and a page

Everything the command line does is here: each ``kerasgen`` command is a thin
layer over these names, and its choices and defaults are the constants below.
Importing kerasgen does not import TensorFlow; the first call that needs it does.
Data flows one way; docs/usage.md ("Layout") gives each module's one job.
"""

__version__ = "0.2.0"

# After __version__, which rundir reads.
from kerasgen.backward import PRECISIONS
from kerasgen.bench import BenchConfig, run_bench
from kerasgen.checks import MAX_SEED
from kerasgen.compare import compare_runs
from kerasgen.edge import QUANTIZE
from kerasgen.engine import SERVE_DEFAULTS
from kerasgen.evaluate import STREAMS
from kerasgen.evaluation import REAL_WORDS_TOKENS, Evaluation
from kerasgen.export import FORMATS, export
from kerasgen.exported import ExportedModel, load_exported
from kerasgen.model import (
    FAMILIES,
    MAX_LAYERS,
    ModelConfig,
    configure_cpu_threads,
)
from kerasgen.presets import as_flags, load_preset, preset_names
from kerasgen.profile import profile_rows
from kerasgen.progress import training_progress
from kerasgen.python_corpus import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_FILE_BYTES,
    SKIP_REASONS,
    build_python_corpus,
)
from kerasgen.python_syntax import DEFAULT_TRIES, SYNTAX_SAMPLE_CHARS, BlockStats
from kerasgen.run import CONSTRAINTS, SYNTAXES, TrainedModel, load
from kerasgen.rundir import CHECKPOINTS
from kerasgen.sampling import SAMPLE_MODES
from kerasgen.settings import (
    LR_SCHEDULES,
    STRATEGIES,
    TrainConfig,
    parse_duration,
)
from kerasgen.streams import decode_prime
from kerasgen.training import train
from kerasgen.vocab import (
    BYTES,
    DEFAULT_MAX_VOCAB,
    DEFAULT_VOCAB_SIZE,
    LEVELS,
    MAX_VOCAB_SIZE,
)

__all__ = [
    "BYTES",
    "CHECKPOINTS",
    "CONSTRAINTS",
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_VOCAB",
    "DEFAULT_TRIES",
    "DEFAULT_VOCAB_SIZE",
    "FAMILIES",
    "FORMATS",
    "LEVELS",
    "LR_SCHEDULES",
    "MAX_LAYERS",
    "MAX_SEED",
    "MAX_VOCAB_SIZE",
    "PRECISIONS",
    "QUANTIZE",
    "REAL_WORDS_TOKENS",
    "SAMPLE_MODES",
    "SERVE_DEFAULTS",
    "SKIP_REASONS",
    "STRATEGIES",
    "STREAMS",
    "SYNTAXES",
    "SYNTAX_SAMPLE_CHARS",
    "BenchConfig",
    "BlockStats",
    "Evaluation",
    "ExportedModel",
    "ModelConfig",
    "TrainConfig",
    "TrainedModel",
    "__version__",
    "as_flags",
    "build_python_corpus",
    "compare_runs",
    "configure_cpu_threads",
    "decode_prime",
    "export",
    "load",
    "load_exported",
    "load_preset",
    "parse_duration",
    "preset_names",
    "profile_rows",
    "run_bench",
    "train",
    "training_progress",
]
