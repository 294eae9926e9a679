"""kerasgen serve: the OpenAI-compatible API, its batching, its errors, a real server.

The app runs in-process through Starlette's test client on the session's tiny run;
``kerasgen serve`` runs as a real process for the ``openai`` client, signals and
disconnects. The page's test in a real browser is in test_page.py.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from serving import running_server

import kerasgen

pytest.importorskip("starlette")
from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def model(trained_run):
    return kerasgen.load(str(trained_run[1]))


@pytest.fixture(scope="module")
def client(model):
    with TestClient(model.app(max_batch=4, max_tokens=3000, warm_up=False)) as c:
        yield c


def complete(client, **body):
    return client.post("/v1/completions", json={"model": "save", **body})


def events(response) -> list:
    """The server-sent events of a streamed response, as dicts, and the last line."""
    lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_health_and_models(client, model):
    assert client.get("/health").json()["status"] == "ok"
    (entry,) = client.get("/v1/models").json()["data"]
    assert entry["id"] == "save" and entry["level"] == "char" and entry["family"] == "lstm"
    assert entry["object"] == "model" and entry["vocab_size"] == len(model.vocab)


def test_a_completion_is_the_text_kerasgen_sample_gives(client, model):
    r = complete(client, prompt="KING", max_tokens=300, seed=5, temperature=0.8)
    assert r.status_code == 200, r.text
    body = r.json()
    (choice,) = body["choices"]
    assert "KING" + choice["text"] == model.generate(300, prime="KING", seed=5, temperature=0.8)
    assert choice["finish_reason"] == "length" and body["object"] == "text_completion"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 300, "total_tokens": 304}
    again = complete(client, prompt="KING", max_tokens=300, seed=5, temperature=0.8)
    assert again.json()["choices"][0]["text"] == choice["text"]  # the same seed, twice


def test_streamed_pieces_join_to_the_completion(client):
    plain = complete(client, prompt="QUEEN:\n", max_tokens=2000, seed=3).json()
    with client.stream(
        "POST",
        "/v1/completions",
        json={"model": "save", "prompt": "QUEEN:\n", "max_tokens": 2000, "seed": 3, "stream": True},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        got = events(r)
    assert len(got) >= 10
    assert "".join(e["choices"][0]["text"] for e in got) == plain["choices"][0]["text"]
    assert got[-1]["choices"][0]["finish_reason"] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in got[:-1])


def test_choices_stop_texts_echo_and_greedy(client, model):
    r = complete(client, prompt="KING", max_tokens=200, seed=9, n=2, echo=True).json()
    assert [c["text"] for c in r["choices"]] == model.generate(
        200, prime="KING", seed=9, num_samples=2
    )
    r = complete(client, prompt="KING", max_tokens=400, seed=9, stop=["\n\n", "ZZ"]).json()
    (choice,) = r["choices"]
    assert "KING" + choice["text"] == model.generate(400, prime="KING", seed=9, stop=["\n\n"])
    assert choice["finish_reason"] == ("stop" if len(choice["text"]) < 400 else "length")
    greedy = complete(client, prompt="KING", max_tokens=50, temperature=0).json()
    assert "KING" + greedy["choices"][0]["text"] == model.generate(50, prime="KING", sample=0)


def test_python_syntax_and_the_constraint(client):
    r = complete(client, prompt="", max_tokens=100, seed=1, syntax="python").json()
    text = r["choices"][0]["text"]
    compile(text, "<sample>", "exec")  # whole blocks only
    r = complete(client, prompt="", max_tokens=100, seed=1, constrain="python")
    assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 100


BAD = [
    ("not json", None, 400),
    ([1, 2], None, 400),
    ({"prompt": "KING", "max_tokens": 10**9}, "max_tokens", 400),
    ({"prompt": "KING", "max_tokens": "10"}, "max_tokens", 400),
    ({"prompt": "KING", "max_tokens": True}, "max_tokens", 400),
    ({"prompt": "KING", "temperature": -1}, "temperature", 400),
    ({"prompt": "KING", "top_p": 0}, "top_p", 400),
    ({"prompt": "KING", "top_p": 1.5}, "top_p", 400),
    ({"prompt": "KING", "top_k": -2}, "top_k", 400),
    ({"prompt": "KING", "seed": -1}, "seed", 400),
    ({"prompt": "KING", "seed": 2**40}, "seed", 400),
    ({"prompt": "\u00e9\u4e2d"}, "prompt", 400),
    ({"prompt": 5}, "prompt", 400),
    ({"prompt": "KING", "model": "gpt-4"}, "model", 400),
    ({"prompt": "KING", "n": 0}, "n", 400),
    ({"prompt": "KING", "n": 99}, "n", 400),
    ({"prompt": "KING", "stop": ""}, "stop", 400),
    ({"prompt": "KING", "stop": [1]}, "stop", 400),
    ({"prompt": "KING", "constrain": "java"}, "constrain", 400),
    ({"prompt": "KING", "syntax": "c"}, "syntax", 400),
    ({"prompt": "KING", "stream": "yes"}, "stream", 400),
    ({"prompt": "KING", "logprobs": 3}, "logprobs", 400),
]


@pytest.mark.parametrize("body,param,status", BAD)
def test_bad_requests_are_openai_errors(client, body, param, status):
    if isinstance(body, dict):
        r = client.post("/v1/completions", json={"model": "save", **body})
    else:
        r = client.post(
            "/v1/completions",
            content=body if isinstance(body, str) else json.dumps(body),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]


def test_unknown_routes_big_bodies_and_methods(client):
    assert client.get("/nowhere").json()["error"]["message"].endswith("Not Found")
    assert client.get("/v1/completions").status_code == 405
    r = client.post("/v1/completions", content=b"x" * (2 << 20))
    assert r.status_code == 413 and "error" in r.json()


def test_an_api_key_guards_the_api_but_not_the_page(model):
    with TestClient(model.app(api_key="sesame", warm_up=False)) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/metrics").status_code == 401
        r = c.post(
            "/v1/completions", json={"prompt": "KING"}, headers={"Authorization": "Bearer wrong"}
        )
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        ok = c.post(
            "/v1/completions",
            json={"prompt": "KING", "max_tokens": 5},
            headers={"Authorization": "Bearer sesame"},
        )
        assert ok.status_code == 200 and len(ok.json()["choices"][0]["text"]) == 5
        assert c.get("/").status_code == 200 and c.get("/health").json()["api_key_required"]


def test_a_full_queue_is_503_with_retry_after(model):
    with TestClient(model.app(max_batch=1, max_queue=0, warm_up=False)) as c:
        engine = c.app.state.engine
        done = threading.Event()

        def long_request():
            c.post("/v1/completions", json={"prompt": "KING", "max_tokens": 3000})
            done.set()

        worker = threading.Thread(target=long_request)
        worker.start()
        deadline = time.time() + 30
        while engine.active == 0 and time.time() < deadline:
            time.sleep(0.01)
        r = c.post("/v1/completions", json={"prompt": "KING", "max_tokens": 5})
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        worker.join(60)
        assert done.is_set()
        assert (
            c.post("/v1/completions", json={"prompt": "KING", "max_tokens": 5}).status_code == 200
        )


def test_overlapping_requests_are_batched_and_never_mix(client, model):
    expected = {seed: model.generate(600, prime="KING", seed=seed)[4:] for seed in range(6)}
    results = {}

    def ask(seed):
        results[seed] = complete(client, prompt="KING", max_tokens=600, seed=seed).json()

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {s: r["choices"][0]["text"] for s, r in results.items()} == expected
    metrics = client.get("/metrics").text
    assert "kerasgen_generated_tokens_total" in metrics and "kerasgen_active_rows 0" in metrics


# ---------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(trained_run):
    # --max_tokens lets a request stream for longer than any test waits.
    with running_server(trained_run[1], "--max_tokens", "5000000") as (url, proc):
        yield url, proc


@pytest.mark.slow  # a real server in its own process (about 11 s to start, shared)
def test_the_openai_client_streams_from_a_real_server(server, model):
    openai = pytest.importorskip("openai")
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model="save", prompt="KING", max_tokens=2000, seed=4, stream=True
        )
    ]
    whole = client.completions.create(model="save", prompt="KING", max_tokens=2000, seed=4)
    assert len(pieces) >= 10 and "".join(pieces) == whole.choices[0].text
    assert "KING" + whole.choices[0].text == model.generate(2000, prime="KING", seed=4)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="save", prompt="KING", temperature=-1)


@pytest.mark.slow  # a real server in its own process (about 11 s to start, shared)
def test_a_client_that_leaves_mid_stream_frees_its_row(server):
    import httpx

    url, _ = server
    with httpx.stream(
        "POST",
        url + "/v1/completions",
        json={"prompt": "KING", "max_tokens": 5000000, "stream": True},
        timeout=30,
    ) as r:
        lines = r.iter_lines()  # held: a dropped iterator closes the connection
        assert next(lines).startswith("data: ")
        assert httpx.get(url + "/health").json()["active_rows"] == 1
    deadline = time.time() + 10
    while httpx.get(url + "/health").json()["active_rows"] and time.time() < deadline:
        time.sleep(0.05)
    assert httpx.get(url + "/health").json()["active_rows"] == 0
    # The same for a client that waits for a whole answer and leaves (the engine is
    # asked within a second; 499 in the log).
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            url + "/v1/completions", json={"prompt": "KING", "max_tokens": 5000000}, timeout=1.0
        )
    deadline = time.time() + 10
    while httpx.get(url + "/health").json()["active_rows"] and time.time() < deadline:
        time.sleep(0.05)
    assert httpx.get(url + "/health").json()["active_rows"] == 0


@pytest.mark.slow  # a real server in its own process (about 11 s to start, shared)
def test_sigterm_lets_streams_finish_then_exits_0(server):
    import httpx

    url, proc = server
    with httpx.stream(
        "POST",
        url + "/v1/completions",
        json={"prompt": "KING", "max_tokens": 3000, "stream": True},
        timeout=60,
    ) as r:
        lines = r.iter_lines()
        first = next(lines)
        proc.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line]
    assert first.startswith("data: ") and rest[-1] == "data: [DONE]"
    text = json.loads(first[6:])["choices"][0]["text"] + "".join(
        json.loads(line[6:])["choices"][0]["text"] for line in rest[:-1]
    )
    assert len(text) == 3000
    assert proc.wait(timeout=60) == 0
    err = proc.log()
    assert "Traceback" not in err and "POST /v1/completions 200 3000 chars" in err


def test_serve_refuses_a_missing_run_in_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "kerasgen", "serve", "--save_dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KERASGEN_API_KEY": ""},
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("Error:")


def readme_serving() -> tuple[str, str]:
    """The README's curl line and openai example."""
    import pathlib

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Serving: an API and a page", 1)[1]
    curl = next(line for line in section.splitlines() if line.startswith("curl "))
    return curl, section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow  # a second real server, the README's client in its own process
def test_the_readme_client_and_curl_line_run_as_written(trained_run):
    import shutil

    from serving import free_port, port_is_free

    curl, example = readme_serving()
    port = 8000 if port_is_free(8000) else free_port()
    if port != 8000:  # another program has the README's port: the same lines on another
        curl, example = (t.replace(":8000", f":{port}") for t in (curl, example))
    with running_server(trained_run[1], port=port):
        r = subprocess.run(
            [sys.executable, "-c", example], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert len(r.stdout) == 300
        if shutil.which("curl"):
            out = subprocess.run(
                curl, shell=True, capture_output=True, text=True, timeout=120
            ).stdout
            assert out.strip().endswith("data: [DONE]") and '"text": ' in out


def test_bad_server_settings_name_their_parameter(model):
    from kerasgen.engine import Engine
    from kerasgen.errors import ParameterError

    with pytest.raises(ParameterError, match=r"^max_tokens must be at least 1, got 0$"):
        model.app(max_tokens=0, warm_up=False)
    for settings, param in (({"max_batch": 0}, "max_batch"), ({"max_queue": -1}, "max_queue")):
        with pytest.raises(ParameterError) as e:
            Engine(model, **settings)
        assert e.value.param == param and str(e.value).startswith(param + " must be ")


def test_only_loopback_addresses_count_as_this_machine():
    from kerasgen.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.20", "example.org"))
