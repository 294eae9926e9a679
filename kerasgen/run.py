"""The one path from a run folder to a ready model: ``load(save_dir) -> TrainedModel``.

``kerasgen sample``, ``kerasgen evaluate``, ``kerasgen compare``, the export
and the Python API all come through here: read the folder (``rundir``), pick
the checkpoint, build the network at the batch size a job needs, load the
weights, and hand out a compiled sampler.
"""

from __future__ import annotations

import numpy as np

from kerasgen import rundir
from kerasgen.sampling import SamplingOptions

DEFAULT_CHECKPOINT = "best"


def resolve_checkpoint(run: rundir.Run, checkpoint: str = DEFAULT_CHECKPOINT) -> str:
    """``checkpoint``, or "latest" when "best" is asked for and the run has none yet
    (trained with --val_frac 0, or stopped before its first validation)."""
    if checkpoint not in rundir.CHECKPOINTS:
        raise ValueError(
            f"checkpoint must be one of {', '.join(rundir.CHECKPOINTS)}, got {checkpoint!r}"
        )
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

    def build(self, batch_size: int):
        """A fresh Keras model with these weights at ``batch_size`` streams."""
        from kerasgen.model import build_model

        model = build_model(self.run.model_config, batch_size)
        model.set_weights(self._weights)
        return model

    def _sampler_for(self, model):
        from kerasgen.sampling import Sampler

        return Sampler(model, self.run.vocab, self.run.preamble, jit_compile=self.jit_compile)

    def sampler(self, num_samples: int = 1):
        """The compiled ``Sampler`` generating ``num_samples`` streams at once."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        if num_samples not in self._samplers:
            self._samplers[num_samples] = self._sampler_for(self.build(num_samples))
        return self._samplers[num_samples]

    def check_prime(self, prime: str) -> None:
        """Raise ValueError naming the characters of ``prime`` the model never saw."""
        unknown = self.run.vocab.unknown(prime)
        if unknown:
            raise ValueError(
                "--prime has characters not in the model's vocabulary: "
                + ", ".join(repr(c) for c in unknown)
                + "; use only characters seen in training"
            )

    def check_constrain(self, constrain: str | None) -> None:
        """Raise ValueError unless this run can be sampled with ``constrain`` ("python"
        needs a character-level run that writes line breaks; None and "none" always can)."""
        from kerasgen.python_lexer import character_classes

        if constrain not in (None, "none", "python"):
            raise ValueError(f"constrain must be 'python', 'none' or None, got {constrain!r}")
        if constrain == "python":
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
    ):
        """Yield the text as it is generated, in pieces whose join is ``generate``'s text.

        One sample: each piece is a string (the first is the prime). With
        ``num_samples > 1``: each piece is a list of ``num_samples`` strings,
        one per sample. Arguments as for ``generate``.
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
            seed=_seed(seed),
            constrain=constrain,
        )
        stop = [stop] if isinstance(stop, str) else list(stop or ())
        if syntax is not None:
            yield from self._stream_blocks(n, prime, options, num_samples, stop, syntax)
            return
        for pieces in self.sampler(num_samples).stream(n, prime, options, stop):
            if num_samples > 1:
                yield pieces
            elif pieces[0]:
                yield pieces[0]

    def _stream_blocks(self, n, prime, options, num_samples, stop, syntax):
        """``stream`` with ``syntax="python"``: each piece a kept block, one sample after the
        other (with ``num_samples > 1``, a list that is empty but for that sample's piece)."""
        from kerasgen.python_code import BlockSampler

        if syntax != "python":
            raise ValueError(f"syntax must be 'python' or None, got {syntax!r}")
        if stop:
            raise ValueError(
                "stop and syntax='python' do not combine: blocks are whole "
                "statements; use -n to bound the length"
            )
        blocks = BlockSampler(self)
        for row in range(num_samples):
            for block in blocks.stream(n, prime, options, sample=row):
                if num_samples == 1:
                    yield block
                else:
                    yield [block if r == row else "" for r in range(num_samples)]

    def evaluate(self, data_dir: str | None = None, *, text: str | None = None) -> dict:
        """Held-out loss and start penalty: the dict ``kerasgen evaluate --json`` prints.

        By default the validation split of the run's training data; ``data_dir``:
        another folder's, cut the same way; ``text``: the whole of this string.
        """
        from kerasgen.evaluate import evaluate_model

        return evaluate_model(self, data_dir, text=text).to_dict(self.save_dir)

    def serve(self, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
        """Serve this model over HTTP until SIGTERM or Ctrl-C: an OpenAI-compatible
        completions API and a page (``kerasgen.server``; ``options``: ``create_app``'s)."""
        from kerasgen.server import serve

        serve(self, host, port, **options)

    def app(self, **options):
        """The ASGI app of ``serve``, to run or mount in another app (``create_app``)."""
        from kerasgen.server import create_app

        return create_app(self, **options)

    def generate(
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
    ):
        """The prime followed by ``n`` generated tokens (characters at char level).

        ``temperature`` divides the logits; ``top_k`` (0: off) and ``top_p``
        (1: off) limit the draw to the most likely tokens; the same ``seed``
        gives the same text (None: a random one). ``stop``: a text or a list of
        texts; each sample ends just before the first one it generates.
        ``sample``: 1 draws every token, 0 takes the most likely, 2 draws only
        after a space. ``syntax="python"``: only complete top-level blocks that
        ``ast.parse`` accepts, each redrawn until it does (the prime is part of
        the first; about ``n`` characters: whole blocks are added until at
        least ``n`` follow the prime; ``kerasgen.python_code.BlockSampler``).
        ``constrain="python"``: never draw a character that breaks Python's
        rules where the next one decides them (``kerasgen.python_lexer``;
        character-level runs); the
        default with ``syntax="python"`` on such a run, which ``constrain="none"``
        turns off.
        Returns a string, or a list of ``num_samples`` strings.
        """
        pieces = self.stream(
            n,
            prime,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            num_samples=num_samples,
            stop=stop,
            sample=sample,
            syntax=syntax,
            constrain=constrain,
        )
        if num_samples == 1:
            return "".join(pieces)
        texts = [[] for _ in range(num_samples)]
        for row in pieces:
            for text, piece in zip(texts, row):
                text.append(piece)
        return ["".join(text) for text in texts]


def _seed(seed: int | None) -> int:
    """``seed``, checked, or a random one for None."""
    from kerasgen.sampling import MAX_SEED, check_seed

    check_seed(seed)
    return int(np.random.default_rng().integers(0, MAX_SEED + 1)) if seed is None else int(seed)


def load(
    save_dir: str = "save", checkpoint: str = DEFAULT_CHECKPOINT, jit_compile: bool = True
) -> TrainedModel:
    """The trained model in ``save_dir``: ``checkpoint`` "best" (lowest validation
    loss; "latest" when the run has no best yet) or "latest"."""
    return TrainedModel(save_dir, checkpoint, jit_compile)
