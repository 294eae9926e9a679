"""An exported folder, run: ``kerasgen sample --exported DIR`` and ``kerasgen evaluate
--exported DIR`` (folders of ``kerasgen export --format tflite`` or ``--format onnx``).

The folder holds the model's ``step`` (ids and state in, logits and state out), the run's
vocabulary and ``export.json`` (``kerasgen.edge``). ``ExportedModel`` drives that step in a
plain Python loop through the file's own runtime (LiteRT's or TensorFlow's TFLite
interpreter; onnxruntime), so a user can check an export before shipping it:

- ``stream`` / ``generate``: the prefix is read as ``kerasgen sample`` reads it (the run's
  preamble, then the prime), and each token is chosen as the compiled sampler chooses it:
  argmax (``sample=0``), or a draw with the sampler's own uniform for (seed, token index),
  computed in NumPy (``sampling.uniform_numpy``). So a seed gives the text ``kerasgen sample
  --seed`` gives, except where float rounding moves a boundary of the distribution across a
  uniform (logits agree to about 1e-5, so rarely).
- ``evaluation`` / ``evaluate``: held-out loss and start penalty exactly as ``kerasgen
  evaluate`` reads them (``kerasgen.evaluate``: the same text, streams and windows), with
  every logit from the exported step.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np

from kerasgen import checks, rundir
from kerasgen.edge import EXPORT_INFO, MODEL_FILES, STEP_SIGNATURE
from kerasgen.errors import CheckpointError, ParameterError
from kerasgen.evaluate import CHUNK_LENGTH, STREAMS, evaluate_model, stream_layout
from kerasgen.evaluation import Evaluation, check_text_and_streams
from kerasgen.model import ModelConfig
from kerasgen.run import describe_checkpoint, resolve_seed
from kerasgen.sampling import (
    ARGMAX,
    SAMPLE,
    SAMPLE_AFTER_SPACE,
    SAMPLE_MODES,
    SamplingOptions,
    draw_numpy,
    glue_rule,
    space_id,
    uniform_numpy,
)

# What a runner of the step leaves at its defaults: the compiled sampler's own features.
UNSUPPORTED = {"top_k": 0, "top_p": 1.0, "num_samples": 1, "syntax": None}
# evaluate's measures of sampled text, which need the compiled sampler.
NOT_EVALUATED = {
    "python_syntax": 0,
    "real_words": 0,
    "n": None,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "seed": 0,
    "prime": "",
    "constrain": None,
}


class ExportedModel:
    """The exported folder ``folder``, ready to generate (``stream`` / ``generate``) and to
    be scored (``evaluation`` / ``evaluate``)."""

    def __init__(self, folder: str):
        self.info, self.vocab, self._runtime, self.run = _read_export(folder)
        format = self.info["format"]
        source = self.info.get("run", {})
        self.folder, self.format = folder, format
        self.rows = self._runtime.rows  # rows the step takes at once (None: any)
        self.context = self.info.get("context")  # a windowed family's, else None
        self.checkpoint = source.get("checkpoint", "best")  # the run's, for evaluate's table
        self.state = {"step": source.get("step")}
        self.preamble = self.run.preamble
        self.space_id, self.glue = space_id(self.vocab), glue_rule(self.vocab)

    def describe(self) -> str:
        """What this is: ``tflite export (int8 weights) of save, best checkpoint, step 9,800``."""
        source = self.info.get("run", {})
        weights = self.info.get("quantize", "none")
        weights = "" if weights == "none" else f" ({weights} weights)"
        run = f" of {source['save_dir']}, " if source.get("save_dir") else ", "
        return f"{self.format} export{weights}{run}" + describe_checkpoint(
            self.checkpoint, self.state["step"]
        )

    # ------------------------------------------------------------ the step

    def initial_state(self, rows: int = 1) -> dict:
        """The state of ``rows`` rows that have read nothing, by the step's input names."""
        return {
            name: np.zeros([rows, *shape], dtype)
            for name, (shape, dtype) in self._runtime.state_specs.items()
        }

    def step(self, token: int, state: dict) -> tuple[np.ndarray, dict]:
        """Read ``token`` (one row): (logits (V,), the new state)."""
        logits, state = self.step_rows(np.array([token], np.int32), state)
        return logits[0], state

    def step_rows(self, ids: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
        """Read ``ids`` (int32 (N,); N = ``rows`` where the step fixes it): (logits (N, V),
        the new state)."""
        out = self._runtime(ids, state)
        logits = out.pop("logits")
        return logits, out

    # ------------------------------------------------------------ generation

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

        _refuse_changed(others, UNSUPPORTED, "stream")
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
        return self._pieces(prefix, n, prime, sample, temperature, resolve_seed(seed), cut)

    def _pieces(self, prefix, n, prime, sample, temperature, seed, cut):
        decoder = self.vocab.decoder()
        state = self.initial_state()
        for token in prefix:
            logits, state = self.step(int(token), state)
        yield prime
        token = int(prefix[-1])
        for g in range(n):
            token = self._choose(logits, token, sample, temperature, seed, g)
            (piece,) = cut.feed([decoder.decode([token])])
            if piece:
                yield piece
            if cut.all_stopped:
                return
            logits, state = self.step(token, state)
        (piece,) = cut.feed([decoder.flush()])
        yield piece + cut.flush()[0]

    def _choose(
        self, logits, previous: int, sample: int, temperature: float, seed: int, g: int
    ) -> int:
        """Generated token ``g``: the most likely (``ARGMAX``, and ``SAMPLE_AFTER_SPACE``
        but after a space) or a draw at ``temperature`` with the compiled sampler's uniform
        for (``seed``, ``g``, row 0); never two word tokens glued together."""
        logits = np.asarray(logits, np.float32)
        if self.glue is not None and self.glue[0][previous]:
            logits = np.where(self.glue[1], np.float32(-np.inf), logits)
        if sample == ARGMAX or (sample == SAMPLE_AFTER_SPACE and previous != self.space_id):
            return int(np.argmax(logits))
        return draw_numpy(logits, temperature, uniform_numpy(seed, g))

    def generate(self, n: int = 500, prime: str = "", **options) -> str:
        """The prime followed by ``n`` generated tokens (``stream``'s options)."""
        return "".join(self.stream(n, prime, **options))

    # ------------------------------------------------------------ evaluation

    def evaluate(self, data_dir: str | None = None, **options) -> dict:
        """Held-out loss and start penalty through the exported step: the dict ``kerasgen
        evaluate --exported --json`` prints (``evaluation``'s options)."""
        return self.evaluation(data_dir, **options).to_dict()

    def evaluation(
        self,
        data_dir: str | None = None,
        *,
        text: str | None = None,
        text_file: str | None = None,
        encoding: str | None = None,
        streams: int = STREAMS,
        **others,
    ) -> Evaluation:
        """``evaluate`` as an ``Evaluation``. The text: the validation split of the run's
        training data (recorded in ``export.json``) or of ``data_dir``'s, cut the same way;
        or the whole of ``text`` or of ``text_file`` (as ``kerasgen.evaluation.evaluate_run``).
        Measures of sampled text are not available on an export."""
        _refuse_changed(others, NOT_EVALUATED, "evaluation")
        check_text_and_streams(data_dir, text, text_file, streams)
        scorer = StepScorer(self)
        loss = evaluate_model(
            self,
            data_dir=data_dir,
            text_file=text_file,
            encoding=encoding,
            streams=streams,
            text=text,
            held_out_loss=scorer.held_out_loss,
            nats_after=scorer.nats_after,
        )
        return Evaluation(self.folder, loss, SamplingOptions())


class StepScorer:
    """Held-out nats through an exported model's step, read as ``kerasgen.evaluate`` reads
    them with the Keras model: the same streams, windows and starts."""

    def __init__(self, model: ExportedModel):
        self.model = model

    def held_out_loss(
        self, ids: np.ndarray, streams: int, chunk_length: int = CHUNK_LENGTH
    ) -> float:
        """Mean nats per token of every next token of ``ids``, cut into ``streams`` streams
        as ``kerasgen.evaluate.evaluate_loss`` cuts them; a windowed family reads each
        stream in windows of its context that overlap by half, as it does there
        (``chunk_length`` changes nothing here: the state carries from step to step)."""
        x, y, mask = stream_layout(np.asarray(ids), streams)  # (S, L) each
        if self.model.context is None:
            return self._nats(x, y, mask) / (len(ids) - 1)
        context, hop = self.model.context, max(self.model.context // 2, 1)
        total = 0.0
        for k in range(1 + math.ceil(max(x.shape[1] - context, 0) / hop)):
            cut = slice(k * hop, k * hop + context)
            scored = mask[:, cut].copy()
            if k > 0:  # the first part was scored by the window before
                scored[:, : context - hop] = 0.0
            total += self._nats(x[:, cut], y[:, cut], scored)
        return total / (len(ids) - 1)

    def nats_after(self, contexts: list[np.ndarray], targets: list[np.ndarray]) -> float:
        """Summed nats of each row's ``targets`` read after its context (all contexts one
        length), every row from a zero state (``kerasgen.evaluate.start_penalty``'s)."""
        start, span = len(contexts[0]), max(len(t) for t in targets)
        seqs = np.zeros((len(contexts), start + span), np.int32)
        mask = np.zeros(seqs.shape, np.float32)
        for r, (context, target) in enumerate(zip(contexts, targets)):
            seqs[r, :start], seqs[r, start : start + len(target)] = context, target
            mask[r, start : start + len(target)] = 1.0
        return self._nats(seqs[:, :-1], seqs[:, 1:], mask[:, 1:])

    def _nats(self, inputs: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
        """Summed nats of ``labels[:, t]`` where ``mask[:, t]``, after each row has read
        ``inputs[:, : t + 1]`` from a zero state; (N, T) each, in as many rows at once as
        the step takes."""
        total = 0.0
        rows = self.model.rows or len(inputs)
        for first in range(0, len(inputs), rows):
            part = slice(first, first + rows)
            x, y, m = inputs[part], labels[part], mask[part]
            last = int(np.nonzero(m.any(axis=0))[0].max(initial=-1))  # nothing scored after
            state = self.model.initial_state(len(x))
            for t in range(last + 1):
                logits, state = self.model.step_rows(x[:, t], state)
                if m[:, t].any():
                    z = logits.astype(np.float64)
                    top = z.max(axis=1)
                    nats = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
                    nats -= z[np.arange(len(z)), y[:, t]]
                    total += float((nats * m[:, t]).sum())
        return total


def _read_export(folder: str):
    """``export.json`` (a dict), the vocabulary, the model's step runtime and the source
    run's ``rundir.Run`` of the export in ``folder``, checked against each other;
    CheckpointError for anything unreadable."""
    from kerasgen.rundir import VOCAB_NAME
    from kerasgen.vocab import vocabulary_from_json

    info_path = os.path.join(folder, EXPORT_INFO)
    if not os.path.isfile(info_path):
        raise FileNotFoundError(
            f"{folder} holds no {EXPORT_INFO}; pass a folder kerasgen export --format "
            "tflite or --format onnx wrote"
        )
    try:
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
        if not isinstance(info, dict):
            raise ValueError(f"{EXPORT_INFO} is not a JSON object")
        format = info.get("format")
        if format not in MODEL_FILES or info.get("model") != MODEL_FILES[format]:
            raise ValueError(f"{EXPORT_INFO} names no model file kerasgen export writes")
        with open(os.path.join(folder, VOCAB_NAME), encoding="utf-8") as f:
            vocab = vocabulary_from_json(f.read())
        path = os.path.join(folder, MODEL_FILES[format])
        if not os.path.isfile(path):
            raise ValueError(f"{MODEL_FILES[format]} is missing")
        try:
            runtime = TfliteStep(path) if format == "tflite" else OnnxStep(path, info)
        except ParameterError:
            raise
        except Exception as e:  # each runtime raises its own kinds for a damaged file
            raise ValueError(f"{MODEL_FILES[format]} does not load: {_first_line(e)}") from None
        if not isinstance(info.get("context"), (int, type(None))):
            raise ValueError(f"the context in {EXPORT_INFO} is not a number")
        described = {s["name"]: (tuple(s["shape"][1:]), s["dtype"]) for s in info["state"]}
        if described != runtime.state_specs:
            raise ValueError(f"the state in {EXPORT_INFO} is not the model's")
        if runtime.vocab_size != len(vocab):
            raise ValueError(
                f"{VOCAB_NAME} has {len(vocab)} tokens, the model {runtime.vocab_size}"
            )
        # Where the run came from: its held-out text, for evaluate (rundir.Run's fields).
        source = info.get("run", {})
        config = source.get("model")
        run = rundir.Run(
            folder,
            ModelConfig.from_dict(config) if config else None,
            {k: v for k, v in source.get("train", {}).items() if v is not None},
            vocab,
            str(info.get("preamble", "")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{folder} is not a readable export ({e}); export again") from None
    return info, vocab, runtime, run


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _refuse_changed(given: dict, defaults: dict, where: str) -> None:
    """ParameterError for an option an export cannot run at a value other than its default."""
    for name, value in given.items():
        if name not in defaults:
            raise TypeError(f"{where}() got an unexpected argument {name!r}")
        if value != defaults[name]:
            raise ParameterError(name, "is not available on an exported model")


class TfliteStep:
    """The ``step`` signature of a ``.tflite`` file: feeds in, outputs by name out.

    The interpreter's tensors are set and read directly: the signature runner would
    resize and allocate every tensor at each call, which costs more than the step."""

    def __init__(self, path: str):
        interpreter = _interpreter(path)
        interpreter.allocate_tensors()  # once: the step's shapes never change
        runner = interpreter.get_signature_runner(STEP_SIGNATURE)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        self._inputs = {name: d["index"] for name, d in inputs.items()}
        self._outputs = [(name, d["index"]) for name, d in outputs.items()]
        self._interpreter = interpreter
        self.rows = 1  # the file's batch (kerasgen.edge exports one row)
        # The state's shape without the batch, and dtype, by input name; the vocabulary size.
        self.state_specs = {
            name: (tuple(int(n) for n in d["shape"][1:]), np.dtype(d["dtype"]).name)
            for name, d in inputs.items()
            if name != "ids"
        }
        self.vocab_size = int(outputs["logits"]["shape"][-1])

    def __call__(self, ids: np.ndarray, state: dict) -> dict:
        interpreter = self._interpreter
        interpreter.set_tensor(self._inputs["ids"], ids.astype(np.int32, copy=False))
        for name, value in state.items():
            interpreter.set_tensor(self._inputs[name], value)
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in self._outputs}


ONNX_TYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64"}


class OnnxStep:
    """The step of a ``.onnx`` file through onnxruntime; outputs by the input names."""

    def __init__(self, path: str, info: dict):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ParameterError(
                "exported",
                "is an ONNX export, which needs onnxruntime: pip install 'kerasgen[onnx]'",
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a step's products are too small to split
        options.log_severity_level = 3  # errors only
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.rows = None  # any number
        renamed = {s["output"]: s["name"] for s in info["state"]}
        self._names = [renamed.get(name, name) for name in self._outputs]
        self.state_specs = {
            i.name: (tuple(i.shape[1:]), ONNX_TYPES.get(i.type, i.type))
            for i in self._session.get_inputs()
            if i.name != "ids"
        }
        self.vocab_size = self._session.get_outputs()[self._outputs.index("logits")].shape[-1]

    def __call__(self, ids: np.ndarray, state: dict) -> dict:
        out = self._session.run(self._outputs, {"ids": ids.astype(np.int32, copy=False), **state})
        return dict(zip(self._names, out))


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
    """The exported folder ``folder`` (``kerasgen export --format tflite|onnx``), ready to run."""
    return ExportedModel(folder)
