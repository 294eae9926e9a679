"""What ``kerasgen evaluate`` reports, in one call: ``evaluate_run``.

The held-out loss and start penalty (``kerasgen.evaluate``), and, when asked,
measures of sampled text: how much of its Python compiles
(``kerasgen.python_syntax``) and how many of its words are real ones (here).
Every argument is checked before anything slow runs. ``Evaluation.to_dict`` is
what ``kerasgen evaluate --json`` prints and ``TrainedModel.evaluate`` returns.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from kerasgen import checks, data, rundir, textfiles
from kerasgen.errors import ParameterError
from kerasgen.evaluate import STREAMS, LossResult, evaluate_model
from kerasgen.python_syntax import (
    SYNTAX_SAMPLE_CHARS,
    SyntaxResult,
    check_syntax_prime,
    sample_syntax,
)
from kerasgen.sampling import SamplingOptions
from kerasgen.streams import generate_text

WORD = re.compile(r"\w+")  # a word of the text: a maximal run of letters, digits and _
REAL_WORDS_TOKENS = 300  # tokens per sample


@dataclass(frozen=True)
class RealWords:
    """How many words of generated samples occur in the training text."""

    found: int  # generated words that are words of the training text
    total: int  # generated words (maximal \w+ runs; "<unk>" counts as the word "unk")
    samples: int
    tokens: int  # generated tokens per sample
    missing: tuple[str, ...]  # the most frequent words not found, most frequent first

    @property
    def rate(self) -> float | None:
        return self.found / self.total if self.total else None

    def to_dict(self, options) -> dict:
        """The ``real_words`` object of ``kerasgen evaluate --json``."""
        return {
            "found": self.found,
            "total": self.total,
            "rate": self.rate,
            "samples": self.samples,
            "tokens": self.tokens,
            "missing": list(self.missing),
            **options.settings(),
        }


def count_real_words(
    model,
    num_samples: int,
    length: int = REAL_WORDS_TOKENS,
    options=None,
    training_text: str | None = None,
) -> RealWords:
    """Generate ``num_samples`` samples of ``length`` tokens (one batch, from where
    ``kerasgen sample`` starts) and count their words that occur in the training text.

    A word is a maximal run of ``\\w`` characters, so two words run together
    (``"theking"``) and a word cut short count as not found. ``training_text``:
    default the training split of the run's data, read and cut as training did.
    """

    checks.at_least("real_words", num_samples, 1)
    if training_text is None:
        training_text = _training_text(model.run)
    known = set(WORD.findall(training_text))
    texts = generate_text(model.sampler(num_samples), length, "", options or SamplingOptions())
    words = [w for text in texts for w in WORD.findall(text)]
    missing = Counter(w for w in words if w not in known)
    return RealWords(
        len(words) - sum(missing.values()),
        len(words),
        num_samples,
        length,
        tuple(w for w, _ in missing.most_common(10)),
    )


def _training_text(run: rundir.Run) -> str:
    """The training split of the run's recorded data, read as training read it."""
    train = run.train_config
    if train.get("data_dir") is None:
        raise ValueError(
            f"{run.save_dir} does not record its training data, which real_words compares against"
        )
    corpus = textfiles.read_corpus_text(
        train["data_dir"], train.get("encoding", "utf-8"), train.get("keep_cr", False)
    )
    return data.split_text(corpus.text, train.get("val_frac", 0.0))[0]


@dataclass(frozen=True)
class Evaluation:
    """A run's held-out loss, and the measures of its samples that were asked for."""

    save_dir: str
    loss: LossResult
    options: SamplingOptions  # how the measured samples were drawn
    python_syntax: SyntaxResult | None = None
    real_words: RealWords | None = None
    prime: str = ""  # what every sample of python_syntax started with

    def to_dict(self) -> dict:
        """What ``kerasgen evaluate --json`` prints (see the README for each key)."""
        result = self.loss.to_dict(self.save_dir)
        if self.python_syntax is not None:
            result["python_syntax"] = self.python_syntax.to_dict(self.options)
        if self.real_words is not None:
            result["real_words"] = self.real_words.to_dict(self.options)
        return result


def check_text_and_streams(data_dir, text, text_file, streams: int) -> None:
    """Raise unless at most one of ``data_dir``, ``text`` and ``text_file`` names the text
    to score, and ``streams`` is at least 1."""
    given = [
        k for k, v in {"data_dir": data_dir, "text": text, "text_file": text_file}.items() if v
    ]
    if len(given) > 1:
        raise ValueError(f"pass only one of {' and '.join(given)}: each names the text to score")
    checks.at_least("streams", streams, 1)


def evaluate_run(
    model,
    data_dir: str | None = None,
    *,
    text: str | None = None,
    text_file: str | None = None,
    encoding: str | None = None,
    streams: int = STREAMS,
    python_syntax: int = 0,
    real_words: int = 0,
    n: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    prime: str = "",
    constrain: str | None = None,
) -> Evaluation:
    """Score ``model`` (a ``TrainedModel``) on held-out text and measure its samples.

    The text: the validation split of the run's training data, or of
    ``data_dir``'s, cut the same way; or the whole of ``text`` (a string) or of
    ``text_file``. ``python_syntax`` / ``real_words``: that many samples of ``n``
    tokens (default 2000 / 300), drawn with ``temperature``, ``top_k``,
    ``top_p``, ``seed`` and ``constrain``; ``prime`` starts every sample of
    ``python_syntax`` (``kerasgen.python_syntax.sample_syntax``).
    """
    check_text_and_streams(data_dir, text, text_file, streams)
    checks.at_least("python_syntax", python_syntax, 0, "0: off")
    checks.at_least("real_words", real_words, 0, "0: off")
    if n is not None:
        checks.at_least("n", n, 1)
    if prime and not python_syntax:
        raise ParameterError("prime", "applies to python_syntax only")
    options = SamplingOptions(
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, constrain=constrain
    )
    model.check_constrain(options.constrain)
    if python_syntax:
        check_syntax_prime(model, prime)  # before the loss, which takes a while
    loss = evaluate_model(
        model, data_dir=data_dir, text_file=text_file, encoding=encoding, streams=streams, text=text
    )
    syntax = words = None
    if python_syntax:
        syntax = sample_syntax(model, python_syntax, n or SYNTAX_SAMPLE_CHARS, options, prime)
    if real_words:
        words = count_real_words(model, real_words, n or REAL_WORDS_TOKENS, options)
    return Evaluation(model.save_dir, loss, options, syntax, words, prime)
