"""Text in and out of the sampler: primes read, ids streamed back as text.

How a sample starts. Before it generates, the model reads a *prefix*: the
run's preamble, then the prime (``prefix_ids``, the one definition, shared by
the sampler and ``kerasgen evaluate``'s start penalty). The preamble, recorded
in the run folder when the run was trained, ends at a line start, so
``--prime "KING"`` is read as the first word of a new line, in a state the
model knows from training. Runs trained before preambles existed have none:
their prefix is the prime alone (or the most frequent token when the prime is
empty). ``decode_prime`` reads the escapes a command line types.

How it ends. ``stream_text`` decodes each chunk of ids as it is generated, with
one incremental decoder per sample (``vocab.decoder()``: a subword can end in
the middle of a character's bytes, which it holds back until the next chunk
completes them), and cuts each sample at its first stop text (``StopTexts``),
so text can be printed as it comes and memory stays flat however long the
sample.
"""

from __future__ import annotations

import re

import numpy as np

from kerasgen.sampling import SamplingOptions


def decode_prime(prime: str) -> str:
    r"""Turn the escapes ``\n``, ``\t`` and ``\\`` typed on a command line into characters."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], prime)


def prefix_ids(vocab, preamble: str, prime: str) -> np.ndarray:
    """The tokens a model reads before it generates: the preamble, then the prime.

    Never empty: with neither, the most frequent token (id 0). Tokenized
    together, as the text would be.
    """
    text = preamble + prime
    return vocab.encode(text).astype(np.int32) if text else np.zeros(1, np.int32)


class StopTexts:
    """Cuts each of N streams of text at its first stop text (which is left out).

    ``feed`` takes the next piece of every stream and returns what can be
    shown: a stream's text up to a stop text, never the start of a possible
    one until the next piece settles it (the longest end of the text that
    begins a stop text is held back).
    """

    def __init__(self, stops, streams: int):
        self.stops = [s for s in stops]
        if any(not s for s in self.stops):
            raise ValueError("a stop text must not be empty")
        self.held = [""] * streams
        self.stopped = [False] * streams

    @property
    def all_stopped(self) -> bool:
        return bool(self.stops) and all(self.stopped)

    def feed(self, pieces: list[str]) -> list[str]:
        shown = []
        for row, piece in enumerate(pieces):
            if self.stopped[row]:
                shown.append("")
                continue
            text = self.held[row] + piece
            found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
            if found:
                self.stopped[row], self.held[row] = True, ""
                shown.append(text[: min(found)])
                continue
            keep = self._partial_stop(text)
            self.held[row] = text[len(text) - keep :]
            shown.append(text[: len(text) - keep])
        return shown

    def flush(self) -> list[str]:
        """What is still held back, once the streams end without a stop text."""
        shown, self.held = self.held, [""] * len(self.held)
        return shown

    def _partial_stop(self, text: str) -> int:
        """Length of the longest end of ``text`` that is a proper beginning of a stop text."""
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest


def stream_text(sampler, n: int, prime: str = "", options: SamplingOptions | None = None, stop=()):
    """Yield the text of a sampler's N samples in pieces, a list of N strings each time.

    The first pieces are the prime. Each sample ends at ``n`` tokens or just
    before its first stop text after the prime; generation ends as soon as every
    sample has stopped.
    """
    batch, vocab = sampler.batch, sampler.vocab
    cut = StopTexts(stop, batch)
    decoders = [vocab.decoder() for _ in range(batch)]
    yield [prime] * batch
    for ids in sampler.stream_ids(n, prime, options or SamplingOptions()):
        yield cut.feed([d.decode(row) for d, row in zip(decoders, ids)])
        if cut.all_stopped:
            return
    # Bytes of a character the sample ended in the middle of (U+FFFD), then
    # whatever the stop texts still hold back.
    yield [a + b for a, b in zip(cut.feed([d.flush() for d in decoders]), cut.flush())]


def generate_text(
    sampler, n: int, prime: str = "", options: SamplingOptions | None = None, stop=()
) -> list[str]:
    """The prime followed by the generated text, one string per sample."""
    texts = [[] for _ in range(sampler.batch)]
    for pieces in stream_text(sampler, n, prime, options, stop):
        for text, piece in zip(texts, pieces):
            text.append(piece)
    return ["".join(text) for text in texts]
