"""An exported folder, run: ``kerasgen sample --exported DIR`` (``kerasgen export --format
tflite``).

The folder holds the model's ``step`` (ids and state in, logits and state out), the run's
vocabulary and ``export.json``; ``ExportedModel`` drives that step in a plain Python loop
through the TFLite interpreter, so a user can check an export before shipping it. The prefix
is read as ``kerasgen sample`` reads it (the run's preamble, then the prime), and argmax
(``sample=0``) gives the same text as ``kerasgen sample --sample 0``. Draws (``sample=1``)
come from NumPy's generator seeded with ``seed``: the same seed gives the same text here,
but not the text ``kerasgen sample`` draws.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

from kerasgen import checks
from kerasgen.errors import CheckpointError, ParameterError
from kerasgen.sampling import ARGMAX, SAMPLE, SAMPLE_AFTER_SPACE, SAMPLE_MODES, glue_rule, space_id

# What a runner of the step leaves at its defaults: the compiled sampler's own features.
STEP_SIGNATURE = "step"
UNSUPPORTED = {"top_k": 0, "top_p": 1.0, "num_samples": 1, "syntax": None}


class ExportedModel:
    """The exported folder ``folder``, ready to generate (``stream`` / ``generate``)."""

    def __init__(self, folder: str):
        from kerasgen.export import EXPORT_INFO
        from kerasgen.rundir import VOCAB_NAME
        from kerasgen.vocab import vocabulary_from_json

        info_path = os.path.join(folder, EXPORT_INFO)
        if not os.path.isfile(info_path):
            raise FileNotFoundError(
                f"{folder} holds no {EXPORT_INFO}; pass a folder kerasgen export --format "
                "tflite wrote"
            )
        try:
            with open(info_path, encoding="utf-8") as f:
                self.info = json.load(f)
            if self.info.get("format") != "tflite":
                raise ValueError(f"its format is {self.info.get('format')!r}, not 'tflite'")
            with open(os.path.join(folder, VOCAB_NAME), encoding="utf-8") as f:
                self.vocab = vocabulary_from_json(f.read())
            interpreter = _interpreter(os.path.join(folder, self.info["model"]))
            self._step = interpreter.get_signature_runner(STEP_SIGNATURE)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{folder} is not a readable export ({e}); export again"
            ) from None
        self.preamble = self.info.get("preamble", "")
        self.space_id, self.glue = space_id(self.vocab), glue_rule(self.vocab)

    def initial_state(self) -> dict:
        """The state of one row that has read nothing, by the step's input names."""
        return {s["name"]: np.zeros([1, *s["shape"][1:]], s["dtype"]) for s in self.info["state"]}

    def step(self, token: int, state: dict) -> tuple[np.ndarray, dict]:
        """Read ``token``: (logits (V,), the new state)."""
        out = self._step(ids=np.array([token], np.int32), **state)
        logits = out.pop("logits")[0]
        return logits, out

    def stream(
        self,
        n: int = 500,
        prime: str = "",
        *,
        sample: int = SAMPLE,
        temperature: float = 1.0,
        seed: int | None = None,
        stop=None,
        constrain: str | None = None,
        block_stats=None,
        tries: int | None = None,
        **others,
    ):
        """The prime, then the text of ``n`` tokens as it is generated, in pieces; each
        sample ends just before its first ``stop`` text. ``others``: the sampler's other
        options, which an export runs at their defaults only."""
        from kerasgen.streams import StopTexts, prefix_ids

        for name, value in others.items():
            if name not in UNSUPPORTED:
                raise TypeError(f"stream() got an unexpected argument {name!r}")
            if value != UNSUPPORTED[name]:
                raise ParameterError(name, "is not available on an exported model")
        if constrain not in (None, "none"):
            raise ParameterError("constrain", "is not available on an exported model")
        checks.one_of("sample", sample, SAMPLE_MODES)
        checks.positive("temperature", temperature)
        checks.seed("seed", seed)
        checks.at_least("n", n, 0)
        if unknown := self.vocab.unknown(prime):
            raise ParameterError(
                "prime",
                "has characters not in the model's vocabulary: " + ", ".join(map(repr, unknown)),
            )
        stops = [stop] if isinstance(stop, str) else list(stop or ())
        cut = StopTexts(stops, 1)
        prefix = prefix_ids(self.vocab, self.preamble, prime)
        return self._pieces(prefix, n, prime, sample, temperature, seed, cut)

    def _pieces(self, prefix, n, prime, sample, temperature, seed, cut):
        rng = np.random.default_rng(seed)
        decoder = self.vocab.decoder()
        state = self.initial_state()
        for token in prefix:
            logits, state = self.step(int(token), state)
        yield prime
        token = int(prefix[-1])
        for _ in range(n):
            token = self._choose(logits, token, sample, temperature, rng)
            (piece,) = cut.feed([decoder.decode([token])])
            if piece:
                yield piece
            if cut.all_stopped:
                return
            logits, state = self.step(token, state)
        (piece,) = cut.feed([decoder.flush()])
        yield piece + cut.flush()[0]

    def _choose(self, logits, previous: int, sample: int, temperature: float, rng) -> int:
        """The next id: the most likely (``ARGMAX``, and ``SAMPLE_AFTER_SPACE`` but after a
        space) or a draw at ``temperature``; never two word tokens glued together."""
        logits = np.asarray(logits, np.float64)
        if self.glue is not None and self.glue[0][previous]:
            logits = np.where(self.glue[1], -np.inf, logits)
        if sample == ARGMAX or (sample == SAMPLE_AFTER_SPACE and previous != self.space_id):
            return int(np.argmax(logits))
        z = logits / temperature
        p = np.exp(z - z.max())
        return int(rng.choice(len(p), p=p / p.sum()))

    def generate(self, n: int = 500, prime: str = "", **options) -> str:
        """The prime followed by ``n`` generated tokens (``stream``'s options)."""
        return "".join(self.stream(n, prime, **options))


def _interpreter(path: str):
    """LiteRT's interpreter where ``ai-edge-litert`` is installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():  # its notice that LiteRT's package replaces it
            warnings.simplefilter("ignore", UserWarning)
            return tf.lite.Interpreter(model_path=path)
    return Interpreter(model_path=path)


def load_exported(folder: str) -> ExportedModel:
    """The exported folder ``folder`` (``kerasgen export --format tflite``), ready to run."""
    return ExportedModel(folder)
