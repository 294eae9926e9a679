"""A real ``kerasgen serve`` process on a free loopback port, for the tests that need one."""

import contextlib
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@contextlib.contextmanager
def running_server(save_dir, *args, port: int | None = None):
    """Yield (url, process) once /health answers; the process is killed after."""
    import httpx

    port = port or free_port()
    # Its output goes to a file: a pipe nobody reads would fill and stall the server.
    log = tempfile.TemporaryFile("w+", encoding="utf-8")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kerasgen",
            "serve",
            "--save_dir",
            str(save_dir),
            "--port",
            str(port),
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log = lambda: (log.seek(0), log.read())[1]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        "kerasgen serve did not start: " + proc.log()[-2000:]
                    ) from None
                time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
