"""``kerasgen serve``: a trained run behind an OpenAI-compatible API and a page."""

from __future__ import annotations

import logging

import click

import kerasgen
from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import checkpoint_option, option, run_folder_option, verbose_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@run_folder_option
@option(
    "--host",
    default="127.0.0.1",
    help="Address to listen on; anything but loopback lets other machines in.",
)
@option("--port", default=8000, type=int, help="Port to listen on.")
@checkpoint_option("serve")
@option(
    "--max_batch",
    default=kerasgen.SERVE_DEFAULTS["max_batch"],
    type=int,
    help="Samples generated at once, as rows of one batch; more wait in the queue.",
)
@option(
    "--max_queue",
    default=kerasgen.SERVE_DEFAULTS["max_queue"],
    type=int,
    help="Samples that may wait for a row; beyond it a request gets 503 with Retry-After.",
)
@option(
    "--max_tokens",
    default=kerasgen.SERVE_DEFAULTS["max_tokens"],
    type=int,
    help="The most tokens (characters at char level) one request may ask for.",
)
@option(
    "--api_key",
    default=None,
    envvar="KERASGEN_API_KEY",
    show_envvar=True,
    help="Require 'Authorization: Bearer KEY' on /v1/ and /metrics. [default: none]",
)
@option(
    "--model_name", default=None, help="The model's id in the API. [default: the run folder's name]"
)
@verbose_option
@library_errors
def serve_command(
    save_dir, host, port, checkpoint, max_batch, max_queue, max_tokens, api_key, model_name
):
    """Serve the model in SAVE_DIR: POST /v1/completions (as OpenAI's API, streaming with
    server-sent events), GET /v1/models, /health, /metrics, and a page at /.

    Runs until Ctrl-C or SIGTERM; streams in flight end first. One log line per
    request goes to stderr.
    """
    kerasgen.configure_cpu_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    model = kerasgen.load(save_dir, checkpoint)
    click.echo(
        f"serving {save_dir} ({model.config.model}, {model.vocab.level} level) on "
        f"http://{host}:{port}/ ; Ctrl-C to stop",
        err=True,
    )
    model.serve(
        host,
        port,
        max_batch=max_batch,
        max_queue=max_queue,
        max_tokens=max_tokens,
        api_key=api_key,
        model_name=model_name,
    )


if __name__ == "__main__":
    from kerasgen_cli.native_logs import run_command

    run_command(serve_command)
