"""Vocabularies: the mapping between text and integer ids, per level.

- ``Vocabulary`` (``--level char``): one id per character.
- ``WordVocabulary`` (``--level word``): one id per token of ``tokenize``:
  words and punctuation marks that carry the space before them, newlines and
  other whitespace, capped at ``max_vocab`` tokens plus one unknown token.
- ``BpeVocabulary`` (``--level bpe``): byte-level BPE subwords learned from
  the training text with Hugging Face ``tokenizers``.

All three have the same interface (``encode``, ``decode``, ``decoder``,
``encode_pieces``, ``token_id``, ``index``, ``unknown``, JSON), so the model,
trainer, sampler and evaluation do not care which level they run at.

The vocabulary travels with every run folder as JSON (``vocab.json``), so a
trained model can be sampled without the text it was trained on.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import json
import math
import re
from dataclasses import dataclass

import numpy as np

from kerasgen import checks

LEVELS = ("char", "word", "bpe")

# Word level, version 2 (the current one). A word (\w+) or a single punctuation
# mark takes the one space before it, as GPT-2's byte-level pre-tokenizer does:
# " the" mid-line and "the" at a line start are different tokens. The model
# then never has to predict the space between two words as a token of its own,
# which it did badly (samples glued words together: "KINGlethargythe"); a word
# is separated from the one before it because the token says so. A longer run
# of spaces or tabs keeps all but its last space as a token of its own when a
# word or mark follows ("   the" is "  " then " the", so indentation keeps its
# shape); other runs of whitespace are one token; every newline is a token
# of its own (the line-start token training and sampling rely on). Every
# character falls in exactly one token, so "".join(tokenize(text)) == text.
TOKEN_PATTERN = re.compile(r" ?\w+| ?[^\w\s]|\n|[^\S\n]+?(?= \S)|[^\S\n]+")
# Version 1 (word-level runs trained before version 2; their vocab.json has no
# "version"): words, single newlines, runs of other whitespace, single marks.
LEGACY_TOKEN_PATTERN = re.compile(r"\w+|\n|[^\S\n]+|[^\w\s]")
WORD_VERSION = 2
DEFAULT_MAX_VOCAB = 10000
UNKNOWN_TOKEN = "<unk>"  # what the unknown id decodes to; tokenize never yields it
SPACE = " "  # always a word-level token: unknown words keep their separation through it

BPE_VERSION = 1
BYTES = 256  # a byte-level BPE vocabulary starts from one token per byte
# Chosen on tiny Shakespeare, where it gave the lowest held-out loss in a fixed training
# time (docs/results.md): a larger vocabulary puts more text in each step, but its
# softmax costs more and most of its tokens are too rare in a small text to learn.
DEFAULT_VOCAB_SIZE = 512
MAX_VOCAB_SIZE = 1 << 20  # bpe: beyond it the embedding alone outgrows any machine


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


class PlainDecoder:
    """The incremental decoder of a level whose every id stands for whole characters:
    each piece of ids decodes on its own, so nothing is ever held back."""

    def __init__(self, vocab):
        self._vocab = vocab

    def decode(self, ids) -> str:
        return self._vocab.decode(ids)

    def flush(self) -> str:
        return ""


class Utf8Decoder:
    """Decodes ids piece by piece where one character's bytes may span tokens.

    ``decode(ids)`` returns the characters the bytes so far complete and holds
    back the bytes of a character still incomplete; ``flush()`` returns what is
    left once the ids end. Bytes that are not UTF-8 (a model can generate them)
    become U+FFFD, as in ``BpeVocabulary.decode``, so the pieces always join to
    exactly what decoding all the ids at once gives.
    """

    def __init__(self, token_bytes: list[bytes]):
        self._bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, ids) -> str:
        return self._utf8.decode(b"".join(self._bytes[int(i)] for i in ids))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class TokenVocabulary:
    """What every vocabulary gives, at any level (``Vocabulary``, ``WordVocabulary``,
    ``BpeVocabulary``); code that takes a vocabulary takes one of these.

    ``level``; ``len()`` (ids are 0..len-1); ``index`` (token text -> id);
    ``encode``/``decode`` between text and ids, and ``encode_pieces`` (the ids and the
    text of each); ``decoder()`` (decodes streamed ids piece by piece); ``unknown(text)``
    (what ``encode`` would refuse); ``to_json()``.
    """

    level = ""

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def index(self) -> dict[str, int]:
        raise NotImplementedError

    def token_id(self, text: str) -> int | None:
        """The id of the one token that is exactly ``text``, or None."""
        return self.index.get(text)

    @property
    def id_dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        return _id_dtype(len(self))

    def unknown(self, text: str) -> list[str]:
        """What of ``text`` ``encode`` would refuse (nothing, where every text encodes)."""
        return []

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def encode_pieces(self, text: str) -> tuple[np.ndarray, list[str]]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def decoder(self):
        raise NotImplementedError

    def to_json(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Vocabulary(TokenVocabulary):
    """Characters ordered by falling frequency (ties by code point): id 0 is the
    most frequent character, which is what an empty prime starts from."""

    chars: tuple[str, ...]
    counts: tuple[int, ...]
    level = "char"

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls.from_counts(collections.Counter(text))

    @classmethod
    def from_counts(cls, counts) -> Vocabulary:
        """From ``{character: count}`` (characters counted elsewhere, e.g. chunk by
        chunk); the same order as ``from_text``. Zero counts are left out."""
        ordered = _ordered((c, int(n)) for c, n in counts.items() if n > 0)
        return cls(tuple(c for c, _ in ordered), tuple(n for _, n in ordered))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

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

    def encode_pieces(self, text: str) -> tuple[np.ndarray, list[str]]:
        """``encode(text)`` and the text each id stands for (they join to ``text``)."""
        return self.encode(text), list(text)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def decoder(self) -> PlainDecoder:
        """An incremental decoder for text generated piece by piece."""
        return PlainDecoder(self)

    def to_json(self) -> str:
        return json.dumps(
            {"chars": list(self.chars), "counts": list(self.counts)}, ensure_ascii=False, indent=1
        )

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        obj = json.loads(text)
        chars, counts = obj["chars"], obj["counts"]
        if (
            len(chars) != len(counts)
            or len(set(chars)) != len(chars)
            or not all(isinstance(c, str) and len(c) == 1 for c in chars)
        ):
            raise ValueError(
                "vocabulary JSON is malformed: 'chars' must be distinct "
                "single characters with one count each"
            )
        return cls(tuple(chars), tuple(int(n) for n in counts))


def tokenize(text: str, version: int = WORD_VERSION) -> list[str]:
    """Word-level tokens of ``text`` (``TOKEN_PATTERN``; ``version`` 1: the legacy
    pattern); joining them gives ``text`` back exactly."""
    pattern = TOKEN_PATTERN if version >= 2 else LEGACY_TOKEN_PATTERN
    return pattern.findall(text)


@dataclass(frozen=True)
class WordVocabulary(TokenVocabulary):
    """Tokens of ``tokenize`` by falling frequency (ties by text), then the unknown token.

    Encoding a token the vocabulary lacks (``encode_pieces``): a token that
    starts with a space becomes the space token (always in the vocabulary),
    then the rest of it, as a token if the vocabulary has it (a word seen at
    line starts, say) or else the unknown token; any other token becomes the
    unknown token. So an unknown word keeps the space before it ("a Zyzzyva"
    decodes to "a <unk>") and a prime is never refused. The unknown token is
    ``unknown_id`` (the last id) and decodes to ``UNKNOWN_TOKEN``.
    ``char_counts`` (the text's character frequencies) price what it hides:
    see ``spelling_nats``.

    ``version`` 1 is the tokenizer of runs trained before words carried their
    space (``LEGACY_TOKEN_PATTERN``; an unknown token is the unknown token
    whole); such runs still load, sample and evaluate as they did.
    """

    tokens: tuple[str, ...]  # the known tokens; the unknown token is not among them
    counts: tuple[int, ...]
    unknown_count: int  # ids that are the unknown token in the text it was built from
    char_counts: tuple[tuple[str, int], ...] = ()  # (character, count) of that text
    version: int = WORD_VERSION
    level = "word"

    @classmethod
    def from_text(cls, text: str, max_vocab: int) -> WordVocabulary:
        """The ``max_vocab`` most frequent tokens of ``text``; the space token is
        always one of them (it takes the last place when it is rarer)."""
        checks.at_least("max_vocab", max_vocab, 1)
        ordered = _by_frequency(tokenize(text))
        kept = ordered[:max_vocab]
        if all(t != SPACE for t, _ in kept):
            kept = kept[: max_vocab - 1] + [(SPACE, dict(ordered).get(SPACE, 0))]
            kept.sort(key=lambda kv: (-kv[1], kv[0]))
        chars = tuple(sorted(collections.Counter(text).items()))
        vocab = cls(tuple(t for t, _ in kept), tuple(n for _, n in kept), 0, chars)
        unknown = int(np.count_nonzero(vocab.encode(text) == vocab.unknown_id))
        return cls(vocab.tokens, vocab.counts, unknown, chars)

    def __len__(self) -> int:
        return len(self.tokens) + 1

    @property
    def unknown_id(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def unknown(self, text: str) -> list[str]:
        """Always empty: tokens the vocabulary lacks encode to the unknown token."""
        return []

    def encode_pieces(self, text: str) -> tuple[np.ndarray, list[str]]:
        """The ids of ``text`` and the text each id stands for (they join to
        ``text``; an unknown id's piece is the text it hides). See the class
        docstring for the rules."""
        index, unknown = self.index, self.unknown_id
        space = index.get(SPACE) if self.version >= 2 else None
        ids, pieces = [], []
        for token in tokenize(text, self.version):
            i = index.get(token)
            if i is None and space is not None and len(token) > 1 and token[0] == SPACE:
                ids.append(space)
                pieces.append(SPACE)
                token = token[1:]
                i = index.get(token)
            ids.append(unknown if i is None else i)
            pieces.append(token)
        return np.array(ids, dtype=self.id_dtype), pieces

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids; tokens outside the vocabulary as ``encode_pieces`` says."""
        return self.encode_pieces(text)[0]

    def decode(self, ids) -> str:
        return "".join(
            self.tokens[i] if i < len(self.tokens) else UNKNOWN_TOKEN for i in map(int, ids)
        )

    def decoder(self) -> PlainDecoder:
        """An incremental decoder for text generated piece by piece."""
        return PlainDecoder(self)

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
        obj = {
            "level": "word",
            "version": self.version,
            "tokens": list(self.tokens),
            "counts": list(self.counts),
            "unknown_count": self.unknown_count,
            "char_counts": dict(self.char_counts),
        }
        if self.version < 2:  # written back as it was read, so old code can still read it
            del obj["version"]
        return json.dumps(obj, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> WordVocabulary:
        obj = json.loads(text)
        version = obj.get("version", 1)  # vocab.json files without one predate version 2
        if version not in (1, WORD_VERSION):
            raise ValueError(
                f"word-level vocabulary version {version!r} is not one this "
                "kerasgen reads; upgrade kerasgen or retrain the run"
            )
        tokens, counts = obj["tokens"], obj["counts"]
        if (
            len(tokens) != len(counts)
            or len(set(tokens)) != len(tokens)
            or not all(isinstance(t, str) and t and tokenize(t, version) == [t] for t in tokens)
        ):
            raise ValueError(
                "vocabulary JSON is malformed: 'tokens' must be distinct "
                "word-level tokens with one count each"
            )
        return cls(
            tuple(tokens),
            tuple(int(n) for n in counts),
            int(obj["unknown_count"]),
            tuple((c, int(n)) for c, n in sorted(obj.get("char_counts", {}).items())),
            version,
        )


def byte_chars() -> dict[int, str]:
    """GPT-2's map from each byte to the printable character that stands for it in
    byte-level BPE token strings (the bytes that are printable Latin-1 stand for
    themselves; the others are moved to code points 256 and up)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    moved = (b for b in range(BYTES) if b not in chars)
    chars.update((b, chr(BYTES + n)) for n, b in enumerate(moved))
    return chars


class BpeVocabulary(TokenVocabulary):
    """Byte-level BPE subwords, learned from the training text.

    Built with Hugging Face ``tokenizers``: a maintained library with a fast
    Rust trainer, that serialises the whole tokenizer (merges and pre-tokenizer) to JSON, and
    that does byte-level BPE, whose 256 single-byte tokens make every text
    encodable: any prime is accepted and there is no unknown token.

    Pre-tokenization (which bounds the merges): every newline is split off
    first, so "\\n" is always exactly one token (the line-start token that
    training resets at and samples start after), then GPT-2's byte-level
    pattern: letters, digits and other marks each take one space before them
    (" the"), as at word level. Ids are the tokenizer's own (the 256 bytes,
    then the merges in the order they were learned).

    ``decode`` joins the tokens' bytes and decodes them as UTF-8; ``decoder()``
    does the same piece by piece for streamed text, holding back a character
    whose bytes are split across pieces.
    """

    level = "bpe"

    def __init__(self, tokenizer):
        """``tokenizer``: a byte-level BPE ``tokenizers.Tokenizer`` (see ``from_text``)."""
        self._tokenizer = tokenizer
        chars = {c: b for b, c in byte_chars().items()}
        by_id = {i: t for t, i in tokenizer.get_vocab().items()}
        if (
            sorted(by_id) != list(range(len(by_id)))
            or any(c not in chars for t in by_id.values() for c in t)
            or not set(chars) <= set(by_id.values())
        ):
            raise ValueError(
                "vocabulary JSON is malformed: the tokenizer must be byte-level "
                "BPE with every single byte a token and ids 0..size-1"
            )
        self._bytes = [bytes(chars[c] for c in by_id[i]) for i in range(len(by_id))]
        self._index = {}
        for i, raw in enumerate(self._bytes):
            with contextlib.suppress(UnicodeDecodeError):  # part of a character: no text
                self._index[raw.decode("utf-8")] = i

    @classmethod
    def from_text(cls, text: str, vocab_size: int = DEFAULT_VOCAB_SIZE) -> BpeVocabulary:
        """Learn merges from ``text`` until ``vocab_size`` tokens (fewer when the
        text runs out of pairs seen at least twice)."""
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        checks.at_least("vocab_size", vocab_size, BYTES, "one token per byte")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        tokenizer.decoder = decoders.ByteLevel()
        # min_frequency 2: a pair seen once is not a pattern, only a memorised string.
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator([text], trainer=trainer)
        return cls(tokenizer)

    def __len__(self) -> int:
        return len(self._bytes)

    def __eq__(self, other) -> bool:
        return isinstance(other, BpeVocabulary) and self.to_json() == other.to_json()

    @property
    def index(self) -> dict[str, int]:
        """Text -> id for the tokens whose bytes are whole characters."""
        return dict(self._index)

    def token_id(self, text: str) -> int | None:
        """The id of the one token that is exactly ``text``, or None."""
        return self._index.get(text)

    def unknown(self, text: str) -> list[str]:
        """Always empty: every text is made of bytes, and every byte is a token."""
        return []

    def encode(self, text: str) -> np.ndarray:
        return np.array(self._tokenizer.encode(text).ids, dtype=self.id_dtype)

    def encode_pieces(self, text: str) -> tuple[np.ndarray, list[str]]:
        """``encode(text)`` and the text each id stands for: the characters its
        bytes complete (a character split across tokens belongs to the last)."""
        ids = self.encode(text)
        decoder = self.decoder()
        pieces = [decoder.decode([i]) for i in ids]
        if pieces:
            pieces[-1] += decoder.flush()
        return ids, pieces

    def decode(self, ids) -> str:
        # "replace": bytes a model generates that are not UTF-8 show as U+FFFD
        # rather than vanish.
        return b"".join(self._bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

    def decoder(self) -> Utf8Decoder:
        """An incremental decoder for text generated piece by piece."""
        return Utf8Decoder(self._bytes)

    def to_json(self) -> str:
        return json.dumps(
            {
                "level": "bpe",
                "version": BPE_VERSION,
                "tokenizer": json.loads(self._tokenizer.to_str()),
            },
            ensure_ascii=False,
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> BpeVocabulary:
        from tokenizers import Tokenizer

        obj = json.loads(text)
        if obj.get("version") != BPE_VERSION:
            raise ValueError(
                f"bpe vocabulary version {obj.get('version')!r} is not one this "
                "kerasgen reads; upgrade kerasgen or retrain the run"
            )
        try:
            tokenizer = Tokenizer.from_str(json.dumps(obj["tokenizer"]))
        except Exception as e:  # tokenizers raises plain Exception for a bad tokenizer
            raise ValueError(
                f"vocabulary JSON is malformed: the tokenizer does not load "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            ) from None
        return cls(tokenizer)


def vocabulary_from_json(text: str):
    """A ``Vocabulary``, ``WordVocabulary`` or ``BpeVocabulary`` from the JSON one writes."""
    obj = json.loads(text)
    level = obj.get("level", "char")
    if level == "word":
        return WordVocabulary.from_json(text)
    if level == "bpe":
        return BpeVocabulary.from_json(text)
    return Vocabulary.from_json(text)


def build_vocabulary(
    text: str, level: str = "char", max_vocab: int | None = None, vocab_size: int | None = None
):
    """The vocabulary of ``text`` at ``level`` (``max_vocab``: word level only;
    ``vocab_size``: bpe level only)."""
    checks.one_of("level", level, LEVELS)
    if level == "word":
        return WordVocabulary.from_text(text, max_vocab or DEFAULT_MAX_VOCAB)
    if level == "bpe":
        return BpeVocabulary.from_text(text, vocab_size or DEFAULT_VOCAB_SIZE)
    return Vocabulary.from_text(text)
