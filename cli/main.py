"""``kerasgen``: the command group. Each command lives in its own module."""

import click

import kerasgen
from kerasgen_cli.bench import bench_command
from kerasgen_cli.compare import compare_command
from kerasgen_cli.corpus import corpus_group
from kerasgen_cli.evaluate import evaluate_command
from kerasgen_cli.export import export_command
from kerasgen_cli.native_logs import run_command
from kerasgen_cli.sample import sample_command
from kerasgen_cli.serve import serve_command
from kerasgen_cli.train import train_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(kerasgen.__version__, prog_name="kerasgen")
def main():
    """Train character-level RNNs on a text file and sample new text from them."""


main.add_command(train_command, "train")
main.add_command(sample_command, "sample")
main.add_command(bench_command, "bench")
main.add_command(evaluate_command, "evaluate")
main.add_command(corpus_group, "corpus")
main.add_command(compare_command, "compare")
main.add_command(export_command, "export")
main.add_command(serve_command, "serve")


def run():
    """The console entry point: TensorFlow's log lines filtered (``native_logs``), then Click."""
    run_command(main)


if __name__ == "__main__":
    run()
