"""The one path from a run folder to a ready model: ``load(save_dir) -> TrainedModel``.

``kerasgen sample``, ``kerasgen evaluate``, ``kerasgen compare``, the export
and the Python API all come through here: read the folder (``rundir``), pick
the checkpoint, build the network at the batch size a job needs, load the
weights, and hand out a compiled sampler.
"""

from __future__ import annotations

import numpy as np

from kerasgen import checks, rundir
from kerasgen.errors import ParameterError
from kerasgen.python_syntax import DEFAULT_TRIES, BlockSampler
from kerasgen.sampling import SamplingOptions
from kerasgen.streams import stream_text

DEFAULT_CHECKPOINT = "best"
# What constrain= may name ("none" or None: no constraint): "python", every character
# keeps the text the start of a module Python compiles (kerasgen.python_check);
# "python-tokens", the compiled lexer alone (faster, looser: kerasgen.python_lexer).
CONSTRAINTS = ("python", "python-tokens")
SYNTAXES = ("python",)  # what syntax= may name


def resolve_checkpoint(run: rundir.Run, checkpoint: str = DEFAULT_CHECKPOINT) -> str:
    """``checkpoint``, or "latest" when "best" is asked for and the run has none yet
    (trained with val_frac 0, or stopped before its first validation)."""
    checks.one_of("checkpoint", checkpoint, rundir.CHECKPOINTS)
    if checkpoint == "best" and not run.has_checkpoint("best"):
        return "latest"
    return checkpoint


class TrainedModel:
    """A trained run, ready to generate text and to be evaluated.

    Made by ``kerasgen.load`` (or returned by ``kerasgen.train``). The network
    is built at each batch size a call needs (``num_samples``) from the same
    weights, read once.
    """

    def __init__(
        self, save_dir: str = "save", checkpoint: str = DEFAULT_CHECKPOINT, jit_compile: bool = True
    ):
        from kerasgen.model import build_model

        self.run = rundir.read_run(save_dir)
        self.save_dir = save_dir
        self.checkpoint = resolve_checkpoint(self.run, checkpoint)
        self.jit_compile = jit_compile
        model = build_model(self.run.model_config, 1)
        self.state = rundir.load_checkpoint(save_dir, self.checkpoint, model)
        self._weights = model.get_weights()
        self._samplers = {1: self._sampler_for(model)}

    @property
    def vocab(self):
        return self.run.vocab

    @property
    def config(self):
        """The model's settings (``ModelConfig``)."""
        return self.run.model_config

    def describe(self) -> str:
        """Which weights these are: ``best checkpoint, step 9,800``."""
        return describe_checkpoint(self.checkpoint, self.state.get("step"))

    def build(self, batch_size: int):
        """A fresh Keras model with these weights at ``batch_size`` streams."""
        from kerasgen.model import build_model

        model = build_model(self.run.model_config, batch_size)
        model.set_weights(self._weights)
        return model

    def _sampler_for(self, model):
        from kerasgen.sampler import Sampler

        return Sampler(model, self.run.vocab, self.run.preamble, jit_compile=self.jit_compile)

    def sampler(self, num_samples: int = 1):
        """The compiled ``Sampler`` generating ``num_samples`` streams at once."""
        checks.at_least("num_samples", num_samples, 1)
        if num_samples not in self._samplers:
            self._samplers[num_samples] = self._sampler_for(self.build(num_samples))
        return self._samplers[num_samples]

    def check_prime(self, prime: str) -> None:
        """Raise ParameterError naming the characters of ``prime`` the model never saw."""
        unknown = self.run.vocab.unknown(prime)
        if unknown:
            raise ParameterError(
                "prime",
                "has characters not in the model's vocabulary: "
                + ", ".join(repr(c) for c in unknown)
                + "; use only characters seen in training",
            )

    def check_constrain(self, constrain: str | None) -> None:
        """Raise ParameterError unless this run can be sampled with ``constrain`` ("python"
        needs a character-level run that writes line breaks; None and "none" always can)."""
        from kerasgen.python_lexer import character_classes

        checks.one_of("constrain", constrain, CONSTRAINTS + ("none", None))
        if constrain in CONSTRAINTS:
            character_classes(self.run.vocab)

    def default_constrain(self, syntax: str | None) -> str:
        """What ``constrain=None`` means: "python" with ``syntax="python"`` on a
        character-level run, else "none"."""
        return "python" if syntax == "python" and self.run.vocab.level == "char" else "none"

    def stream(
        self,
        n: int = 500,
        prime: str = "",
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        num_samples: int = 1,
        stop=None,
        sample: int = 1,
        syntax: str | None = None,
        constrain: str | None = None,
        tries: int = DEFAULT_TRIES,
        block_stats=None,
    ):
        """The text as it is generated, in pieces whose join is ``generate``'s text.

        One sample: each piece is a string (the first is the prime). With
        ``num_samples > 1``: each piece is a list of ``num_samples`` strings,
        one per sample. The arguments are checked at once, before anything is drawn;
        they are those ``generate`` describes. With ``syntax``, a
        ``block_stats`` (``kerasgen.BlockStats()``) is filled in with the blocks
        drawn, kept and given up on as they are.
        """
        self.check_prime(prime)
        if constrain is None:
            constrain = self.default_constrain(syntax)
        self.check_constrain(constrain)
        options = SamplingOptions(
            sample=sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=resolve_seed(seed),
            constrain=constrain,
        )
        checks.at_least("n", n, 0)
        stop = [stop] if isinstance(stop, str) else list(stop or ())
        if not all(stop):
            raise ParameterError("stop", "must not be empty")
        if syntax is None:
            return _pieces(
                stream_text(self.sampler(num_samples), n, prime, options, stop), num_samples
            )
        checks.one_of("syntax", syntax, SYNTAXES)
        if stop:
            raise ParameterError(
                "stop",
                "does not combine with syntax='python': blocks are whole statements; bound "
                "the length with n",
            )
        blocks = BlockSampler(self, tries, block_stats)
        return _blocks(blocks, n, prime, options, num_samples)

    def evaluate(self, data_dir: str | None = None, **options) -> dict:
        """Held-out loss and start penalty, and the measures asked for: the dict
        ``kerasgen evaluate --json`` prints (``options``: its flags, by name).

        By default the validation split of the run's training data; ``data_dir``:
        another folder's, cut the same way; ``text``: the whole of this string;
        ``python_syntax=N``, ``real_words=N``: measures of N samples
        (``kerasgen.evaluation.evaluate_run`` lists every option).
        """
        return self.evaluation(data_dir, **options).to_dict()

    def evaluation(self, data_dir: str | None = None, **options):
        """``evaluate`` as an ``Evaluation``: the results as objects (a table's rows)."""
        from kerasgen.evaluation import evaluate_run

        return evaluate_run(self, data_dir, **options)

    def serve(self, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
        """Serve this model over HTTP until SIGTERM or Ctrl-C: an OpenAI-compatible
        completions API and a page (``kerasgen.server``; ``options``: ``create_app``'s)."""
        from kerasgen.server import serve

        serve(self, host, port, **options)

    def app(self, **options):
        """The ASGI app of ``serve``, to run or mount in another app (``create_app``)."""
        from kerasgen.server import create_app

        return create_app(self, **options)

    def generate(self, n: int = 500, prime: str = "", **options):
        """The prime followed by ``n`` generated tokens (characters at char level).

        ``options``, as ``stream`` takes them: ``temperature`` divides the logits;
        ``top_k`` (0: off) and ``top_p`` (1: off) limit the draw to the most
        likely tokens; the same ``seed`` gives the same text (None: a random one).
        ``num_samples``: that many samples at once. ``stop``: a text or a list of
        texts; each sample ends just before the first one it generates.
        ``sample``: 1 draws every token, 0 takes the most likely, 2 draws only
        after a space. ``syntax="python"``: only complete top-level blocks that
        Python compiles, each redrawn until it does, at most ``tries``
        times (the prime is part of the first; whole blocks are added until at
        least ``n`` characters follow the prime; ``python_syntax.BlockSampler``).
        ``constrain="python"``: every character drawn keeps the text the start of a
        module Python compiles (``kerasgen.python_check``; character-level runs); the
        default with ``syntax="python"`` on such a run, which ``constrain="none"``
        turns off. ``"python-tokens"``: only the rules the next character decides
        (``kerasgen.python_lexer``; faster).
        Returns a string, or a list of ``num_samples`` strings.
        """
        pieces = self.stream(n, prime, **options)
        num_samples = options.get("num_samples", 1)
        return "".join(pieces) if num_samples == 1 else _joined(pieces, num_samples)


def _pieces(stream, num_samples: int):
    """A sampler's pieces (lists of strings) as ``stream`` yields them: strings for one
    sample, the first of them the prime."""
    for pieces in stream:
        if num_samples > 1:
            yield pieces
        elif pieces[0]:
            yield pieces[0]


def _blocks(blocks, n: int, prime: str, options, num_samples: int):
    """``stream`` with ``syntax="python"``: each piece a kept block, one sample after the
    other (with ``num_samples > 1``, a list that is empty but for that sample's piece)."""
    streams = [blocks.stream(n, prime, options, sample=row) for row in range(num_samples)]
    for row, stream in enumerate(streams):  # each checked its arguments at once
        for block in stream:
            yield (
                block
                if num_samples == 1
                else [block if r == row else "" for r in range(num_samples)]
            )


def _joined(pieces, num_samples: int) -> list[str]:
    """The texts of ``num_samples`` samples from pieces that are lists of strings."""
    texts = [[] for _ in range(num_samples)]
    for row in pieces:
        for text, piece in zip(texts, row):
            text.append(piece)
    return ["".join(text) for text in texts]


def resolve_seed(seed: int | None) -> int:
    """``seed``, checked, or a fresh random one for None: the one seeding rule."""
    checks.seed("seed", seed)
    if seed is None:
        return int(np.random.default_rng().integers(0, checks.MAX_SEED + 1))
    return int(seed)


def load(
    save_dir: str = "save", checkpoint: str = DEFAULT_CHECKPOINT, jit_compile: bool = True
) -> TrainedModel:
    """The trained model in ``save_dir``: ``checkpoint`` "best" (lowest validation
    loss; "latest" when the run has no best yet) or "latest"."""
    return TrainedModel(save_dir, checkpoint, jit_compile)


def describe_checkpoint(checkpoint: str, step: int | None) -> str:
    """``best checkpoint, step 9,800`` (without the step when it is not known)."""
    return f"{checkpoint} checkpoint" + ("" if step is None else f", step {step:,}")
