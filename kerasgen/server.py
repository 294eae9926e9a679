"""``kerasgen serve``: a trained run behind an OpenAI-compatible API, and a page.

``create_app(model)`` is an ASGI app (Starlette) that a user may also mount in
their own; ``serve(model, host, port)`` runs it with uvicorn until SIGTERM or
Ctrl-C (in-flight streams end first). The routes follow the completions API
that clients such as the ``openai`` package already speak:

    GET  /                 the page: a prime, a length, a temperature, Generate and Stop
    GET  /health           {"status": "ok", ...}
    GET  /v1/models        the run, with its level and family
    POST /v1/completions   prompt, max_tokens, temperature, top_p, seed, stop, n, echo,
                           stream (server-sent events ending with "data: [DONE]"), and
                           kerasgen's top_k, constrain ("python"), syntax ("python")
    GET  /metrics          Prometheus text: requests, tokens, active rows, queue length

Every sample is a stream of the batching engine (``kerasgen.engine``); a request
with ``syntax: "python"`` is drawn block by block (``BlockSampler``), one at a
time, beside the batch. Bad input is an HTTP 400 with an OpenAI-style error
body and one log line; a full queue is a 503 with Retry-After; nothing a
request sends names a file.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass

from kerasgen.engine import FINISH_ERROR, Busy, Engine, Stream
from kerasgen.sampling import ARGMAX, MAX_SEED, SAMPLE, SamplingOptions

LOG = logging.getLogger("kerasgen.server")
API_KEY_ENV = "KERASGEN_API_KEY"
DEFAULT_MAX_TOKENS = 16  # what a request without max_tokens gets, as OpenAI's API
MAX_CHOICES = 16  # n
MAX_STOPS = 16
MAX_BODY_BYTES = 1 << 20
RETRY_AFTER_S = 1
CLIENT_GONE = 499  # the status logged for a client that left before its answer
DISCONNECT_CHECK_S = 0.5  # how often a request waiting for its whole answer looks for it
# On SIGTERM or Ctrl-C, streams in flight get this long to finish before they are cut.
GRACEFUL_SHUTDOWN_S = 30


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
    """``body`` (decoded JSON) as a ``Completion``; ``ApiError`` (400) naming the field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")

    def get(key, kinds, default, what):
        value = body.get(key, default)
        if value is None:
            return default
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise ApiError(400, f"{key} must be {what}, got {json.dumps(value)[:80]}", key)
        return value

    asked = get("model", (str,), name, "a string")
    if asked != name:
        raise ApiError(
            400,
            f"model {asked!r} is not served here; this server has {name!r} (GET /v1/models)",
            "model",
            code="model_not_found",
        )
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
    tokens = get("max_tokens", (int,), DEFAULT_MAX_TOKENS, "a whole number")
    if not 0 <= tokens <= max_tokens:
        raise ApiError(
            400,
            f"max_tokens must be from 0 to {max_tokens} (this server's --max_tokens), got {tokens}",
            "max_tokens",
        )
    temperature = float(get("temperature", (int, float), 1.0, "a number"))
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ApiError(
            400,
            f"temperature must be >= 0 (0: the most likely token), got {temperature}",
            "temperature",
        )
    top_p = float(get("top_p", (int, float), 1.0, "a number"))
    if not 0 < top_p <= 1:
        raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", "top_p")
    top_k = get("top_k", (int,), 0, "a whole number")
    if top_k < 0:
        raise ApiError(400, f"top_k must be >= 0 (0: off), got {top_k}", "top_k")
    seed = get("seed", (int,), None, "a whole number")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ApiError(400, f"seed must be from 0 to {MAX_SEED}, got {seed}", "seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
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
    n = get("n", (int,), 1, "a whole number")
    if not 1 <= n <= min(MAX_CHOICES, max_batch):
        raise ApiError(400, f"n must be from 1 to {min(MAX_CHOICES, max_batch)}, got {n}", "n")
    constrain = get("constrain", (str,), None, '"python" or "none"')
    syntax = get("syntax", (str,), None, '"python"')
    if syntax not in (None, "python"):
        raise ApiError(400, f'syntax must be "python", got {syntax!r}', "syntax")
    if syntax is not None and stop:
        raise ApiError(400, "stop and syntax do not combine: blocks are whole statements", "stop")
    for key, allowed in (("logprobs", (None, 0)), ("best_of", (None, 1)), ("suffix", (None,))):
        if body.get(key) not in allowed:
            raise ApiError(400, f"{key} is not supported by this server", key)
    try:
        if constrain is None:
            constrain = model.default_constrain(syntax)
        model.check_constrain(constrain)
        options = SamplingOptions(
            sample=ARGMAX if temperature == 0 else SAMPLE,
            temperature=temperature or 1.0,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            constrain=constrain,
        )
    except ValueError as e:
        raise ApiError(400, str(e).replace("--", ""), "constrain") from None
    return Completion(
        prompt,
        tokens,
        options,
        tuple(stop),
        n,
        get("echo", (bool,), False, "true or false"),
        get("stream", (bool,), False, "true or false"),
        syntax,
    )


class Metrics:
    """Counters for GET /metrics."""

    def __init__(self):
        self.requests = {}  # (path, status) -> count
        self.lock = threading.Lock()

    def count(self, path: str, status: int) -> None:
        with self.lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1

    def text(self, engine: Engine) -> str:
        lines = ["# TYPE kerasgen_requests_total counter"]
        with self.lock:
            for (path, status), count in sorted(self.requests.items()):
                lines.append(f'kerasgen_requests_total{{path="{path}",status="{status}"}} {count}')
        lines += [
            "# TYPE kerasgen_generated_tokens_total counter",
            f"kerasgen_generated_tokens_total {engine.generated}",
            "# TYPE kerasgen_active_rows gauge",
            f"kerasgen_active_rows {engine.active}",
            "# TYPE kerasgen_queue_length gauge",
            f"kerasgen_queue_length {engine.queued}",
        ]
        return "\n".join(lines) + "\n"


def create_app(
    model,
    *,
    max_batch: int = 32,
    max_tokens: int = 4096,
    max_queue: int = 256,
    api_key: str | None = None,
    model_name: str | None = None,
    warm_up: bool = True,
):
    """The ASGI app serving ``model`` (a ``TrainedModel``); see the module docstring.

    ``max_batch`` rows are generated at once and ``max_queue`` more samples may
    wait; ``max_tokens`` caps a request's; ``api_key`` (default: the
    KERASGEN_API_KEY variable) is then required as ``Authorization: Bearer KEY``
    on /v1/ and /metrics. The engine starts with the app (its lifespan).
    """
    import contextlib

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    name = model_name or os.path.basename(os.path.abspath(model.save_dir))
    engine = Engine(model, max_batch, max_queue)
    metrics = Metrics()
    blocks_lock = threading.Lock()  # syntax="python" draws one request at a time

    def error(e: ApiError) -> Response:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if e.status == 503 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    def check_key(request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(
                401,
                "a valid API key is needed: Authorization: Bearer KEY",
                kind="authentication_error",
                code="invalid_api_key",
            )

    async def read_json(request):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            raise ApiError(413, f"the request body is over {MAX_BODY_BYTES:,} bytes")
        body = b""
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_BODY_BYTES:
                raise ApiError(413, f"the request body is over {MAX_BODY_BYTES:,} bytes")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({e})") from None

    async def page(request):
        from importlib.resources import files

        html = files("kerasgen").joinpath("page", "index.html").read_text(encoding="utf-8")
        return Response(html, media_type="text/html; charset=utf-8")

    async def health(request):
        return JSONResponse(
            {
                "status": "ok",
                "model": name,
                "api_key_required": api_key is not None,
                "active_rows": engine.active,
                "queued": engine.queued,
            }
        )

    async def models(request):
        check_key(request)
        return JSONResponse(
            {
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
        )

    async def metrics_route(request):
        check_key(request)
        return PlainTextResponse(metrics.text(engine), media_type="text/plain; version=0.0.4")

    async def completions(request):
        check_key(request)
        job = parse_completion(await read_json(request), model, name, max_tokens, max_batch)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def deliver_for(index):
            def deliver(text, finish):
                loop.call_soon_threadsafe(queue.put_nowait, (index, text, finish))

            return deliver

        streams = [
            Stream(job.prompt, job.max_tokens, job.options, deliver_for(i), index=i, stop=job.stop)
            for i in range(job.n)
        ]
        if job.syntax is not None:
            start_blocks(job, streams)
        else:
            try:
                engine.submit(streams)
            except Busy as e:
                raise ApiError(503, str(e), kind="server_busy") from None
        head = {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
        }
        prompt_tokens = len(model.vocab.encode(job.prompt))
        if job.stream:
            return StreamingResponse(
                sse(job, streams, queue, head, request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        texts, finishes = [job.prompt if job.echo else "" for _ in streams], [None] * job.n
        checked = time.monotonic()
        try:
            while None in finishes:
                try:
                    piece = await asyncio.wait_for(queue.get(), timeout=DISCONNECT_CHECK_S)
                except asyncio.TimeoutError:
                    piece = None
                if time.monotonic() - checked >= DISCONNECT_CHECK_S:
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return Response(status_code=CLIENT_GONE)  # nobody reads it
                if piece is not None:
                    index, text, finish = piece
                    texts[index] += text
                    finishes[index] = finish
        finally:
            for stream in streams:
                stream.cancel()  # a no-op for finished ones; frees a row if the client left
        if FINISH_ERROR in finishes:
            raise ApiError(500, "generation failed on the server", kind="server_error")
        request.state.chars = sum(len(t) for t in texts)
        completion = sum(s.made for s in streams)
        return JSONResponse(
            {
                **head,
                "choices": [
                    {"text": t, "index": i, "logprobs": None, "finish_reason": f}
                    for i, (t, f) in enumerate(zip(texts, finishes))
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion,
                },
            }
        )

    async def sse(job, streams, queue, head, request):
        def event(index, text, finish):
            return (
                "data: "
                + json.dumps(
                    {
                        **head,
                        "choices": [
                            {
                                "text": text,
                                "index": index,
                                "logprobs": None,
                                "finish_reason": finish,
                            }
                        ],
                    },
                    ensure_ascii=False,
                )
                + "\n\n"
            )

        left, chars = len(streams), 0
        try:
            if job.echo:
                for i in range(job.n):
                    yield event(i, job.prompt, None)
            while left:
                index, text, finish = await queue.get()
                chars += len(text)
                request.state.chars = chars
                if finish is not None:
                    left -= 1
                    if finish == FINISH_ERROR:
                        yield (
                            "data: "
                            + json.dumps(
                                ApiError(
                                    500, "generation failed on the server", kind="server_error"
                                ).body()
                            )
                            + "\n\n"
                        )
                        continue
                if text or finish is not None:
                    yield event(index, text, finish)
            yield "data: [DONE]\n\n"
        finally:
            for stream in streams:
                stream.cancel()

    def start_blocks(job, streams):
        """syntax="python": each stream's blocks from BlockSampler, on a thread of its own,
        one request at a time (not batched)."""
        from kerasgen.python_code import BlockSampler

        def work():
            with blocks_lock:
                for stream in streams:
                    made, finish = 0, "length"
                    try:
                        pieces = BlockSampler(model).stream(
                            stream.n, stream.prime, stream.options, sample=stream.index
                        )
                        for k, block in enumerate(pieces):
                            if stream.cancelled.is_set():
                                finish = "cancelled"
                                break
                            block = block[len(stream.prime) :] if k == 0 else block
                            made += len(block)
                            stream.made = made
                            if block:
                                stream.deliver(block, None)
                    except Exception as e:
                        LOG.error("syntax python failed: %s", str(e).splitlines()[0])
                        finish = FINISH_ERROR
                    stream.deliver("", finish)

        threading.Thread(target=work, name="kerasgen-blocks", daemon=True).start()

    def handler(fn):
        """A route whose failures are one log line and a JSON error, never a traceback."""

        async def route(request):
            try:
                return await fn(request)
            except ApiError:
                raise  # on_api_error answers it
            except Exception as e:
                LOG.error(
                    "%s %s failed: %s: %s",
                    request.method,
                    request.url.path,
                    type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "",
                )
                return error(
                    ApiError(500, "the server failed on this request", kind="server_error")
                )

        return route

    async def on_api_error(request, e: ApiError):
        request.state.error = e.message  # the access log's line says it
        return error(e)

    async def on_http_error(request, e: HTTPException):
        return error(
            ApiError(
                e.status_code,
                f"{request.method} {request.url.path}: {e.detail}",
                kind="invalid_request_error",
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if warm_up:
            await asyncio.get_running_loop().run_in_executor(None, engine.warm_up)
        engine.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    app = Starlette(
        routes=[
            Route("/", handler(page)),
            Route("/health", handler(health)),
            Route("/v1/models", handler(models)),
            Route("/v1/completions", handler(completions), methods=["POST"]),
            Route("/metrics", handler(metrics_route)),
        ],
        exception_handlers={ApiError: on_api_error, HTTPException: on_http_error},
        lifespan=lifespan,
    )
    app.state.engine = engine
    return _AccessLog(app, metrics)


class _AccessLog:
    """One log line per request: method, path, status, characters sent, seconds."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state", {})
            path = scope["path"]
            self.metrics.count(
                path
                if path in ("/", "/health", "/v1/models", "/v1/completions", "/metrics")
                else "other",
                status[0],
            )
            why = f" ({state['error']})" if "error" in state else ""
            LOG.info(
                "%s %s %d %d chars %.3fs%s",
                scope["method"],
                path,
                status[0],
                state.get("chars", 0),
                time.perf_counter() - started,
                why,
            )


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(model, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve ``model`` on ``host:port`` until SIGTERM or Ctrl-C (``create_app``'s
    options); streams in flight end first (within GRACEFUL_SHUTDOWN_S)."""
    import uvicorn

    if not is_loopback(host):
        LOG.warning(
            "listening on %s: other machines can reach this server%s",
            host,
            "" if options.get("api_key") or os.environ.get(API_KEY_ENV) else " (no --api_key set)",
        )
    app = create_app(model, **options)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    # uvicorn shuts down gracefully on SIGTERM and Ctrl-C, then raises the signal again
    # for the handler that was there before it: these ones let the process end with 0.
    stops = (signal.SIGINT, signal.SIGTERM)
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, lambda *_: None) for s in stops} if main else {}
    try:
        uvicorn.Server(config).run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
