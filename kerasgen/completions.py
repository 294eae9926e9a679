"""The wire format of ``kerasgen serve``: OpenAI's completions API, checked and shaped.

``parse_completion`` turns the JSON body of a ``POST /v1/completions`` into a
``Completion`` or raises ``ApiError`` (400) naming the field at fault; the
other functions shape what the server answers: an error body, a completion,
its server-sent events and the ``/v1/models`` list.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass

from kerasgen.checks import MAX_SEED
from kerasgen.sampling import ARGMAX, SAMPLE, SamplingOptions

DEFAULT_MAX_TOKENS = 16  # what a request without max_tokens gets, as OpenAI's API
MAX_CHOICES = 16  # n
MAX_STOPS = 16
# Fields of OpenAI's API this server takes only at their default values.
UNSUPPORTED = (("logprobs", (None, 0)), ("best_of", (None, 1)), ("suffix", (None,)))
SSE_DONE = "data: [DONE]\n\n"


class ApiError(Exception):
    """An error answered as OpenAI's API answers it: ``{"error": {...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = (
            status,
            message,
            param,
            kind,
            code,
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def generation_failed() -> ApiError:
    """The error of a request whose samples the server failed to generate."""
    return ApiError(500, "generation failed on the server", kind="server_error")


# -- the request


@dataclass(frozen=True)
class Completion:
    """A checked ``/v1/completions`` request."""

    prompt: str
    max_tokens: int
    options: SamplingOptions
    stop: tuple
    n: int
    echo: bool
    stream: bool
    syntax: str | None


def parse_completion(body, model, name: str, max_tokens: int, max_batch: int) -> Completion:
    """``body`` (decoded JSON) as a ``Completion``; ``ApiError`` (400) naming the field.

    ``model`` (a ``TrainedModel``) is served as ``name``; a request may ask for up to
    ``max_tokens`` tokens and as many samples as ``max_batch`` rows (at most MAX_CHOICES).
    """
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _check_model(body, name)
    prompt = _prompt(body, model)
    tokens = _max_tokens(body, max_tokens)
    temperature, top_p, top_k, seed = _sampling(body)
    stop = _stop(body)
    n = _choices(body, max_batch)
    constrain = _field(body, "constrain", (str,), None, '"python", "python-tokens" or "none"')
    syntax = _syntax(body, stop)
    _refuse_unsupported(body)
    options = _options(model, constrain, syntax, temperature, top_p, top_k, seed)
    return Completion(
        prompt,
        tokens,
        options,
        tuple(stop),
        n,
        _field(body, "echo", (bool,), False, "true or false"),
        _field(body, "stream", (bool,), False, "true or false"),
        syntax,
    )


def _field(body: dict, key: str, kinds: tuple, default, what: str):
    """``body[key]`` if it is one of ``kinds`` (described as ``what``), ``default`` if
    it is missing or null."""
    value = body.get(key, default)
    if value is None:
        return default
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ApiError(400, f"{key} must be {what}, got {json.dumps(value)[:80]}", key)
    return value


def _check_model(body: dict, name: str) -> None:
    asked = _field(body, "model", (str,), name, "a string")
    if asked != name:
        raise ApiError(
            400,
            f"model {asked!r} is not served here; this server has {name!r} (GET /v1/models)",
            "model",
            code="model_not_found",
        )


def _prompt(body: dict, model) -> str:
    """The prompt: a string, or a list of one, of characters in the model's vocabulary."""
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (or a list of one string)", "prompt")
    unknown = model.vocab.unknown(prompt)
    if unknown:
        raise ApiError(
            400,
            "prompt has characters not in the model's vocabulary: "
            + ", ".join(repr(c) for c in unknown[:20]),
            "prompt",
        )
    return prompt


def _max_tokens(body: dict, limit: int) -> int:
    tokens = _field(body, "max_tokens", (int,), DEFAULT_MAX_TOKENS, "a whole number")
    if not 0 <= tokens <= limit:
        raise ApiError(
            400,
            f"max_tokens must be from 0 to {limit} (this server's --max_tokens), got {tokens}",
            "max_tokens",
        )
    return tokens


def _sampling(body: dict) -> tuple[float, float, int, int]:
    """temperature, top_p, top_k and seed (a random one when none is given)."""
    temperature = float(_field(body, "temperature", (int, float), 1.0, "a number"))
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ApiError(
            400,
            f"temperature must be >= 0 (0: the most likely token), got {temperature}",
            "temperature",
        )
    top_p = float(_field(body, "top_p", (int, float), 1.0, "a number"))
    if not 0 < top_p <= 1:
        raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", "top_p")
    top_k = _field(body, "top_k", (int,), 0, "a whole number")
    if top_k < 0:
        raise ApiError(400, f"top_k must be >= 0 (0: off), got {top_k}", "top_k")
    seed = _field(body, "seed", (int,), None, "a whole number")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ApiError(400, f"seed must be from 0 to {MAX_SEED}, got {seed}", "seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    return temperature, top_p, top_k, seed


def _stop(body: dict) -> list:
    """The stop texts: none, one string or a list of at most MAX_STOPS non-empty ones."""
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not (
        isinstance(stop, list)
        and len(stop) <= MAX_STOPS
        and all(isinstance(s, str) and s for s in stop)
    ):
        raise ApiError(
            400, f"stop must be a non-empty string or a list of at most {MAX_STOPS}", "stop"
        )
    return stop


def _choices(body: dict, max_batch: int) -> int:
    n = _field(body, "n", (int,), 1, "a whole number")
    if not 1 <= n <= min(MAX_CHOICES, max_batch):
        raise ApiError(400, f"n must be from 1 to {min(MAX_CHOICES, max_batch)}, got {n}", "n")
    return n


def _syntax(body: dict, stop: list) -> str | None:
    """None or "python" (whole blocks, which no stop text may cut)."""
    syntax = _field(body, "syntax", (str,), None, '"python"')
    if syntax not in (None, "python"):
        raise ApiError(400, f'syntax must be "python", got {syntax!r}', "syntax")
    if syntax is not None and stop:
        raise ApiError(400, "stop and syntax do not combine: blocks are whole statements", "stop")
    return syntax


def _refuse_unsupported(body: dict) -> None:
    for key, allowed in UNSUPPORTED:
        if body.get(key) not in allowed:
            raise ApiError(400, f"{key} is not supported by this server", key)


def _options(model, constrain, syntax, temperature, top_p, top_k, seed) -> SamplingOptions:
    """The sampling options, with ``constrain`` checked against the model's run."""
    try:
        if constrain is None:
            constrain = model.default_constrain(syntax)
        model.check_constrain(constrain)
        return SamplingOptions(
            sample=ARGMAX if temperature == 0 else SAMPLE,
            temperature=temperature or 1.0,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            constrain=constrain,
        )
    except ValueError as e:  # a ParameterError names the field
        raise ApiError(400, str(e), getattr(e, "param", "constrain")) from None


# -- the answers


def completion_head(name: str) -> dict:
    """The fields every answer to one request shares, its chunks' too."""
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": name,
    }


def choice(index: int, text: str, finish: str | None) -> dict:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


def completion_body(
    head: dict, texts: list, finishes: list, prompt_tokens: int, completion_tokens: int
) -> dict:
    """A whole completion: one choice per sample, and the tokens used."""
    return {
        **head,
        "choices": [choice(i, t, f) for i, (t, f) in enumerate(zip(texts, finishes))],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def event(data: dict) -> str:
    """``data`` as one server-sent event."""
    return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"


def chunk_event(head: dict, index: int, text: str, finish: str | None) -> str:
    """A piece of sample ``index`` (with why it ended, in its last one) as an event."""
    return event({**head, "choices": [choice(index, text, finish)]})


def models_body(model, name: str, max_tokens: int, max_batch: int) -> dict:
    """The ``/v1/models`` list: the one model served, with what kerasgen adds."""
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": int(os.path.getmtime(model.save_dir)),
                "owned_by": "kerasgen",
                "level": model.vocab.level,
                "family": model.config.model,
                "vocab_size": len(model.vocab),
                "checkpoint": model.checkpoint,
                "max_tokens": max_tokens,
                "max_batch": max_batch,
            }
        ],
    }
