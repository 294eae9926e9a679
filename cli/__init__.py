"""The ``kerasgen`` command line (installed as the package ``kerasgen_cli``).

A thin Click layer: parse options, call the ``kerasgen`` library, print results,
and turn library errors into one-line messages with the right exit code.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, CPU feature notes) is not for
# users (see native_logs, which filters what this setting lets through); an
# explicit setting in the environment still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
