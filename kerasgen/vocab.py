"""Character vocabulary: the mapping between characters and integer ids.

The vocabulary travels with every run folder as JSON, so a trained model can
be sampled without the text it was trained on.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Vocabulary:
    """Characters ordered by falling frequency (ties by code point): id 0 is the
    most frequent character, which is what an empty prime starts from."""

    chars: tuple[str, ...]
    counts: tuple[int, ...]

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        counter = collections.Counter(text)
        ordered = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(tuple(c for c, _ in ordered), tuple(n for _, n in ordered))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    @property
    def id_dtype(self) -> np.dtype:
        """The smallest unsigned dtype that holds every id (ids are cached in it)."""
        return np.dtype(np.uint16 if len(self) <= np.iinfo(np.uint16).max + 1 else np.int32)

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
