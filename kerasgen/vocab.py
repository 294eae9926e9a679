"""Vocabularies: the mapping between text and integer ids, per level.

``Vocabulary`` (``--level char``) has one id per character. ``WordVocabulary``
(``--level word``) has one id per token of ``tokenize``: words, runs of
spaces/tabs, single newlines and single punctuation characters, capped at
``max_vocab`` tokens plus one unknown token. Both have the same interface
(``encode``, ``decode``, ``index``, ``unknown``, JSON), so the model, trainer
and sampler do not care which level they run at.

The vocabulary travels with every run folder as JSON, so a trained model can
be sampled without the text it was trained on.
"""

from __future__ import annotations

import collections
import json
import math
import re
from dataclasses import dataclass

import numpy as np

LEVELS = ("char", "word")

# Words (\w+), single newlines, runs of other whitespace, single other characters.
# Every character of a text falls in exactly one token, so "".join(tokens) == text.
TOKEN_PATTERN = re.compile(r"\w+|\n|[^\S\n]+|[^\w\s]")
DEFAULT_MAX_VOCAB = 10000
UNKNOWN_TOKEN = "<unk>"  # what the unknown id decodes to; tokenize never yields it


def _by_frequency(items) -> list[tuple[str, int]]:
    """(item, count) pairs by falling count, ties by the item itself."""
    return _ordered(collections.Counter(items).items())


def _ordered(pairs) -> list[tuple[str, int]]:
    return sorted(pairs, key=lambda kv: (-kv[1], kv[0]))


def _id_dtype(size: int) -> np.dtype:
    """The smallest dtype that holds ids below ``size`` (ids are cached in it)."""
    for dtype in (np.uint8, np.uint16):
        if size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.int32)


@dataclass(frozen=True)
class Vocabulary:
    """Characters ordered by falling frequency (ties by code point): id 0 is the
    most frequent character, which is what an empty prime starts from."""

    chars: tuple[str, ...]
    counts: tuple[int, ...]
    level = "char"

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        return cls.from_counts(collections.Counter(text))

    @classmethod
    def from_counts(cls, counts) -> "Vocabulary":
        """From ``{character: count}`` (characters counted elsewhere, e.g. chunk by
        chunk); the same order as ``from_text``. Zero counts are left out."""
        ordered = _ordered((c, int(n)) for c, n in counts.items() if n > 0)
        return cls(tuple(c for c, _ in ordered), tuple(n for _, n in ordered))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    @property
    def id_dtype(self) -> np.dtype:
        return _id_dtype(len(self))

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` that are not in the vocabulary, in first-seen order."""
        index = self.index
        return list(dict.fromkeys(c for c in text if c not in index))

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids. Raises ValueError naming characters not in the vocabulary."""
        missing = self.unknown(text)
        if missing:
            shown = ", ".join(repr(c) for c in missing)
            raise ValueError(
                f"characters not in the vocabulary: {shown}; "
                "use only characters the model was trained on"
            )
        index = self.index
        return np.fromiter((index[c] for c in text), dtype=self.id_dtype, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"chars": list(self.chars), "counts": list(self.counts)},
                          ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        obj = json.loads(text)
        chars, counts = obj["chars"], obj["counts"]
        if len(chars) != len(counts) or len(set(chars)) != len(chars) or not all(
                isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("vocabulary JSON is malformed: 'chars' must be distinct "
                             "single characters with one count each")
        return cls(tuple(chars), tuple(int(n) for n in counts))


def tokenize(text: str) -> list[str]:
    """Word-level tokens of ``text``; joining them gives ``text`` back exactly."""
    return TOKEN_PATTERN.findall(text)


@dataclass(frozen=True)
class WordVocabulary:
    """Tokens of ``tokenize`` by falling frequency (ties by text), then the unknown token.

    Tokens outside the ``max_vocab`` most frequent encode to ``unknown_id``
    (the last id), which decodes to ``UNKNOWN_TOKEN``. ``char_counts`` (the
    text's character frequencies) price what the unknown token hides: see
    ``spelling_nats``.
    """

    tokens: tuple[str, ...]  # the known tokens; the unknown token is not among them
    counts: tuple[int, ...]
    unknown_count: int  # occurrences mapped to the unknown token in the text it was built from
    char_counts: tuple[tuple[str, int], ...] = ()  # (character, count) of that text
    level = "word"

    @classmethod
    def from_text(cls, text: str, max_vocab: int) -> "WordVocabulary":
        if max_vocab < 1:
            raise ValueError(f"--max_vocab must be at least 1, got {max_vocab}")
        ordered = _by_frequency(tokenize(text))
        kept = ordered[:max_vocab]
        chars = sorted(collections.Counter(text).items())
        return cls(tuple(t for t, _ in kept), tuple(n for _, n in kept),
                   sum(n for _, n in ordered[max_vocab:]), tuple(chars))

    def __len__(self) -> int:
        return len(self.tokens) + 1

    @property
    def unknown_id(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def id_dtype(self) -> np.dtype:
        return _id_dtype(len(self))

    def unknown(self, text: str) -> list[str]:
        """Always empty: tokens the vocabulary lacks encode to the unknown token."""
        return []

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids; tokens outside the vocabulary become ``unknown_id``."""
        index, unknown = self.index, self.unknown_id
        tokens = tokenize(text)
        return np.fromiter((index.get(t, unknown) for t in tokens), dtype=self.id_dtype,
                           count=len(tokens))

    def decode(self, ids) -> str:
        return "".join(self.tokens[i] if i < len(self.tokens) else UNKNOWN_TOKEN
                       for i in map(int, ids))

    def spelling_nats(self, token: str) -> float:
        """Nats to spell ``token`` out character by character with the character
        frequencies of the training text (add-one smoothed, one extra slot for
        characters never seen). Predicting ``<unk>`` says only "some rare
        token"; adding this cost to it makes word-level loss per character
        comparable with character-level loss instead of flattering it."""
        counts = dict(self.char_counts)
        total = sum(counts.values()) + len(counts) + 1
        return float(sum(math.log(total / (counts.get(c, 0) + 1)) for c in token))

    def to_json(self) -> str:
        return json.dumps({"level": "word", "tokens": list(self.tokens),
                           "counts": list(self.counts), "unknown_count": self.unknown_count,
                           "char_counts": dict(self.char_counts)},
                          ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "WordVocabulary":
        obj = json.loads(text)
        tokens, counts = obj["tokens"], obj["counts"]
        if len(tokens) != len(counts) or len(set(tokens)) != len(tokens) or not all(
                isinstance(t, str) and t and tokenize(t) == [t] for t in tokens):
            raise ValueError("vocabulary JSON is malformed: 'tokens' must be distinct "
                             "word-level tokens with one count each")
        return cls(tuple(tokens), tuple(int(n) for n in counts), int(obj["unknown_count"]),
                   tuple((c, int(n)) for c, n in sorted(obj.get("char_counts", {}).items())))


def vocabulary_from_json(text: str):
    """A ``Vocabulary`` or ``WordVocabulary`` from the JSON either writes."""
    obj = json.loads(text)
    if obj.get("level", "char") == "word":
        return WordVocabulary.from_json(text)
    return Vocabulary.from_json(text)


def build_vocabulary(text: str, level: str = "char", max_vocab: int | None = None):
    """The vocabulary of ``text`` at ``level`` (``max_vocab``: word level only)."""
    if level not in LEVELS:
        raise ValueError(f"unknown --level {level!r}; choose one of " + ", ".join(LEVELS))
    if level == "word":
        return WordVocabulary.from_text(text, max_vocab or DEFAULT_MAX_VOCAB)
    return Vocabulary.from_text(text)
