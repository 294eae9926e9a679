"""Load figures for ``kerasgen serve``, on this machine only (127.0.0.1), bounded in count
and time. Start a server first, then:

    kerasgen serve --save_dir save/cpu10 &
    python docs/serve_load.py --url http://127.0.0.1:8000 --save_dir save/cpu10

It prints, as medians over --rounds: one client streaming --chars characters (chars/s
and the time to its first piece), --clients clients at once (their characters per
second together), the same run folder sampled in this process (``generate`` on one
stream and on --clients streams: what the server is compared with), and a hostile
round (bad JSON, huge max_tokens, wrong types, clients that leave mid-stream, 100
requests at once) after which the server must still answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from urllib.parse import urlparse

import httpx


async def stream_one(client, url, chars: int, seed: int) -> tuple[float, float, int]:
    """(seconds to the first piece, seconds in all, characters) of one streamed request."""
    started, first, got = time.perf_counter(), None, 0
    body = {"prompt": "KING", "max_tokens": chars, "seed": seed, "stream": True}
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            text = json.loads(line[6:])["choices"][0]["text"]
            if text and first is None:
                first = time.perf_counter() - started
            got += len(text)
    return first, time.perf_counter() - started, got


async def clients_at_once(client, url, count: int, chars: int) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(*(stream_one(client, url, chars, seed) for seed in range(count)))
    return sum(r[2] for r in results) / (time.perf_counter() - started)


async def hostile(client, url) -> dict:
    """200 bad or rude requests, 100 of them at once; the statuses seen."""
    bodies = [
        b"not json",
        b"[1, 2]",
        json.dumps({"prompt": "KING", "max_tokens": 10**9}).encode(),
        json.dumps({"prompt": "KING", "temperature": "hot"}).encode(),
        json.dumps({"prompt": "KING", "top_p": 7}).encode(),
        json.dumps({"prompt": 5}).encode(),
        b"{" * 5000,
    ]
    statuses: dict = {}

    async def bad(k):
        r = await client.post(
            url + "/v1/completions",
            content=bodies[k % len(bodies)],
            headers={"content-type": "application/json"},
        )
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    async def leave(k):
        body = {"prompt": "KING", "max_tokens": 4000, "stream": True, "seed": k}
        async with client.stream("POST", url + "/v1/completions", json=body) as r:
            async for _ in r.aiter_lines():
                break  # gone after the first piece
        statuses["left"] = statuses.get("left", 0) + 1

    await asyncio.gather(*(bad(k) for k in range(70)), *(leave(k) for k in range(30)))
    await asyncio.gather(*(bad(k) for k in range(100)))
    good = await client.post(url + "/v1/completions", json={"prompt": "KING", "max_tokens": 20})
    statuses["good request after"] = good.status_code
    statuses["health after"] = (await client.get(url + "/health")).status_code
    return statuses


def in_process(save_dir: str, chars: int, streams: int, rounds: int) -> tuple[float, float]:
    """kerasgen's own sampling of the same run: chars/s of one stream and of ``streams``."""
    import kerasgen
    from kerasgen.model import configure_cpu_threads

    configure_cpu_threads()
    model = kerasgen.load(save_dir)
    rates = []
    for n in (1, streams):
        model.generate(chars, prime="KING", seed=0, num_samples=n)  # compiled first
        times = []
        for k in range(rounds):
            started = time.perf_counter()
            model.generate(chars, prime="KING", seed=k, num_samples=n)
            times.append(time.perf_counter() - started)
        rates.append(n * chars / statistics.median(times))
    return rates[0], rates[1]


async def main(args) -> None:
    host = urlparse(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("this load script only talks to a server on this machine (127.0.0.1)")
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await stream_one(client, args.url, args.chars, 0)  # warm
        singles = [await stream_one(client, args.url, args.chars, k) for k in range(args.rounds)]
        one = statistics.median(r[2] / r[1] for r in singles)
        first = statistics.median(r[0] for r in singles)
        many = statistics.median(
            [
                await clients_at_once(client, args.url, args.clients, args.chars)
                for _ in range(args.rounds)
            ]
        )
        print(
            f"one client, {args.chars} chars streamed: {one:,.0f} chars/s; first piece "
            f"after {first * 1000:.0f} ms"
        )
        print(
            f"{args.clients} clients at once: {many:,.0f} chars/s together "
            f"({many / one:.1f}x one client)"
        )
        if args.save_dir:
            alone, batched = in_process(args.save_dir, args.chars, args.clients, args.rounds)
            print(
                f"in this process: one stream {alone:,.0f} chars/s (server {one / alone:.0%}), "
                f"{args.clients} streams {batched:,.0f} chars/s (server {many / batched:.0%})"
            )
        print("hostile round:", await hostile(client, args.url))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--save_dir", default=None, help="also time the run in this process")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
