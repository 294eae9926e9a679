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
request sends names a file. What a request may say and how the answers look
is ``kerasgen.completions``; this module routes, generates and logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import signal
import threading
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from kerasgen import checks
from kerasgen.completions import (
    SSE_DONE,
    ApiError,
    Completion,
    chunk_event,
    completion_body,
    completion_head,
    event,
    generation_failed,
    models_body,
    parse_completion,
)
from kerasgen.engine import FINISH_ERROR, SERVE_DEFAULTS, Busy, Engine, Stream
from kerasgen.errors import ParameterError

LOG = logging.getLogger("kerasgen.server")
API_KEY_ENV = "KERASGEN_API_KEY"
MAX_BODY_BYTES = 1 << 20
RETRY_AFTER_S = 1
CLIENT_GONE = 499  # the status logged for a client that left before its answer
DISCONNECT_CHECK_S = 0.5  # how often a request waiting for its whole answer looks for it
# On SIGTERM or Ctrl-C, streams in flight get this long to finish before they are cut.
GRACEFUL_SHUTDOWN_S = 30
PATHS = ("/", "/health", "/v1/models", "/v1/completions", "/metrics")  # counted by name


def create_app(
    model,
    *,
    max_batch: int = SERVE_DEFAULTS["max_batch"],
    max_tokens: int = SERVE_DEFAULTS["max_tokens"],
    max_queue: int = SERVE_DEFAULTS["max_queue"],
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
    if max_tokens < 1:
        raise ParameterError("max_tokens", f"must be at least 1, got {max_tokens}")
    api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    name = model_name or os.path.basename(os.path.abspath(model.save_dir))
    engine = Engine(model, max_batch, max_queue)
    metrics = Metrics()
    routes = _Routes(model, engine, metrics, name, api_key, max_tokens)
    app = Starlette(
        routes=routes.table(),
        exception_handlers={ApiError: _on_api_error, HTTPException: _on_http_error},
        lifespan=_lifespan(engine, warm_up),
    )
    app.state.engine = engine
    return _AccessLog(app, metrics)


class _Routes:
    """The handlers of the routes, and what they share: the model served as ``name``,
    its engine and counters, the API key (None: none needed) and the token limit."""

    def __init__(self, model, engine: Engine, metrics: Metrics, name, api_key, max_tokens):
        self.model, self.engine, self.metrics = model, engine, metrics
        self.name, self.api_key, self.max_tokens = name, api_key, max_tokens
        self.blocks_lock = threading.Lock()  # syntax="python" draws one request at a time

    def table(self) -> list[Route]:
        return [
            Route("/", _guarded(self.page)),
            Route("/health", _guarded(self.health)),
            Route("/v1/models", _guarded(self.models)),
            Route("/v1/completions", _guarded(self.completions), methods=["POST"]),
            Route("/metrics", _guarded(self.metrics_text)),
        ]

    def check_key(self, request) -> None:
        """``ApiError`` (401) unless the request carries the API key, where there is one."""
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
            raise ApiError(
                401,
                "a valid API key is needed: Authorization: Bearer KEY",
                kind="authentication_error",
                code="invalid_api_key",
            )

    async def page(self, request):
        from importlib.resources import files

        html = files("kerasgen").joinpath("page", "index.html").read_text(encoding="utf-8")
        return Response(html, media_type="text/html; charset=utf-8")

    async def health(self, request):
        return JSONResponse(
            {
                "status": "ok",
                "model": self.name,
                "api_key_required": self.api_key is not None,
                "active_rows": self.engine.active,
                "queued": self.engine.queued,
            }
        )

    async def models(self, request):
        self.check_key(request)
        body = models_body(self.model, self.name, self.max_tokens, self.engine.max_batch)
        return JSONResponse(body)

    async def metrics_text(self, request):
        self.check_key(request)
        text = self.metrics.text(self.engine)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def completions(self, request):
        """The samples of one request: streamed as events, or in one JSON answer."""
        self.check_key(request)
        job = parse_completion(
            await read_json(request), self.model, self.name, self.max_tokens, self.engine.max_batch
        )
        queue: asyncio.Queue = asyncio.Queue()
        streams = _streams(job, queue)
        self.start(job, streams)
        head = completion_head(self.name)
        if job.stream:
            return StreamingResponse(
                _events(job, streams, queue, head, request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        answer = await _collect(job, streams, queue, request)
        if answer is None:
            return Response(status_code=CLIENT_GONE)  # nobody reads it
        texts, finishes = answer
        if FINISH_ERROR in finishes:
            raise generation_failed()
        request.state.chars = sum(len(t) for t in texts)
        prompt_tokens = len(self.model.vocab.encode(job.prompt))
        made = sum(s.made for s in streams)
        return JSONResponse(completion_body(head, texts, finishes, prompt_tokens, made))

    def start(self, job: Completion, streams: list[Stream]) -> None:
        """Generate ``streams``: on the engine, or block by block for ``syntax``;
        ``ApiError`` (503) when the engine has no room."""
        if job.syntax is not None:
            threading.Thread(
                target=_draw_blocks,
                args=(self.model, streams, self.blocks_lock),
                name="kerasgen-blocks",
                daemon=True,
            ).start()
            return
        try:
            self.engine.submit(streams)
        except Busy as e:
            raise ApiError(503, str(e), kind="server_busy") from None


# -- a request's body and samples


async def read_json(request):
    """The request's body, decoded; ``ApiError`` if over MAX_BODY_BYTES or not JSON."""
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


def _streams(job: Completion, queue: asyncio.Queue) -> list[Stream]:
    """The ``n`` streams of ``job``, each putting ``(index, text, finish)`` in ``queue``
    (from whichever thread generates it)."""
    loop = asyncio.get_running_loop()

    def deliver_for(index):
        def deliver(text, finish):
            loop.call_soon_threadsafe(queue.put_nowait, (index, text, finish))

        return deliver

    return [
        Stream(job.prompt, job.max_tokens, job.options, deliver_for(i), index=i, stop=job.stop)
        for i in range(job.n)
    ]


async def _collect(job: Completion, streams: list[Stream], queue: asyncio.Queue, request):
    """Every stream's whole text and finish reason, or None if the client left first;
    the streams are cancelled at the end either way."""
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
                    return None
            if piece is not None:
                index, text, finish = piece
                texts[index] += text
                finishes[index] = finish
    finally:
        for stream in streams:
            stream.cancel()  # a no-op for finished ones; frees a row if the client left
    return texts, finishes


async def _events(job: Completion, streams: list[Stream], queue: asyncio.Queue, head, request):
    """The server-sent events of ``streams``, as their pieces come, then ``[DONE]``."""
    left, chars = len(streams), 0
    try:
        if job.echo:
            for i in range(job.n):
                yield chunk_event(head, i, job.prompt, None)
        while left:
            index, text, finish = await queue.get()
            chars += len(text)
            request.state.chars = chars
            if finish is not None:
                left -= 1
                if finish == FINISH_ERROR:
                    yield event(generation_failed().body())
                    continue
            if text or finish is not None:
                yield chunk_event(head, index, text, finish)
        yield SSE_DONE
    finally:
        for stream in streams:
            stream.cancel()


def _draw_blocks(model, streams: list[Stream], lock: threading.Lock) -> None:
    """syntax="python": each stream's blocks from BlockSampler, one stream after another,
    holding ``lock`` (one request at a time, not batched)."""
    with lock:
        for stream in streams:
            stream.deliver("", _blocks_of(model, stream))


def _blocks_of(model, stream: Stream) -> str:
    """Deliver the blocks of ``stream`` after its prime; return why they ended."""
    from kerasgen.python_syntax import BlockSampler

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
    return finish


# -- errors, the lifespan, the counters and the access log


def _error_response(e: ApiError) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if e.status == 503 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def _guarded(fn):
    """A route whose failures are one log line and a JSON error, never a traceback."""

    async def route(request):
        try:
            return await fn(request)
        except ApiError:
            raise  # _on_api_error answers it
        except Exception as e:
            LOG.error(
                "%s %s failed: %s: %s",
                request.method,
                request.url.path,
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
            )
            return _error_response(
                ApiError(500, "the server failed on this request", kind="server_error")
            )

    return route


async def _on_api_error(request, e: ApiError):
    request.state.error = e.message  # the access log's line says it
    return _error_response(e)


async def _on_http_error(request, e: HTTPException):
    return _error_response(
        ApiError(
            e.status_code,
            f"{request.method} {request.url.path}: {e.detail}",
            kind="invalid_request_error",
        )
    )


def _lifespan(engine: Engine, warm_up: bool):
    """The app's lifespan: the engine (compiled first if ``warm_up``) runs within it."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if warm_up:
            await asyncio.get_running_loop().run_in_executor(None, engine.warm_up)
        engine.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    return lifespan


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
            self.record(scope, status[0], time.perf_counter() - started)

    def record(self, scope, status: int, seconds: float) -> None:
        """Count the request for /metrics and log its line."""
        state = scope.get("state", {})
        path = scope["path"]
        self.metrics.count(path if path in PATHS else "other", status)
        why = f" ({state['error']})" if "error" in state else ""
        LOG.info(
            "%s %s %d %d chars %.3fs%s",
            scope["method"],
            path,
            status,
            state.get("chars", 0),
            seconds,
            why,
        )


# -- running it


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(model, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve ``model`` on ``host:port`` until SIGTERM or Ctrl-C (``create_app``'s
    options); streams in flight end first (within GRACEFUL_SHUTDOWN_S)."""
    import uvicorn

    checks.in_range("port", port, 0, 65535)
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
    with _stop_signals_end_quietly():
        uvicorn.Server(config).run()


@contextlib.contextmanager
def _stop_signals_end_quietly():
    """uvicorn shuts down gracefully on SIGTERM and Ctrl-C, then raises the signal again
    for the handler that was there before it: within this, that handler does nothing, so
    the process ends with 0. The handlers before are back after it."""
    stops = (signal.SIGINT, signal.SIGTERM)
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, lambda *_: None) for s in stops} if main else {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
