"""``kerasgen compare``: several runs side by side on the same held-out text."""

from __future__ import annotations

import json

import click

import kerasgen
from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import checkpoint_option, option, verbose_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("save_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@option(
    "--data_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Score the validation split of DATA_DIR/input.txt [default: the first run's "
    "training data].",
)
@checkpoint_option("compare (runs without a best checkpoint use latest)")
@option(
    "--json",
    "as_json",
    is_flag=True,
    default=False,
    help="Print one JSON object per run, one per line.",
)
@verbose_option
@library_errors
def compare_command(save_dirs, data_dir, checkpoint, as_json):
    """Compare the runs in SAVE_DIRS: model, parameters, training time, speed, held-out loss.

    Every run is scored on the same characters (see kerasgen evaluate); training
    time and chars/s are those of the training steps up to the compared checkpoint.
    """
    rows = kerasgen.compare_runs(save_dirs, data_dir, checkpoint)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_dict()))
        return
    click.echo(f"held-out text: {rows[0].loss.source}, {rows[0].loss.targets:,} characters")
    header = ("run", "model", "level", "params", "train time", "chars/s", "nats/char", "bits/char")
    table = [header] + [
        (
            row.save_dir,
            row.model,
            row.level,
            f"{row.params:,}",
            "?" if row.train_seconds is None else f"{row.train_seconds / 60:.1f} min",
            "?" if row.chars_per_s is None else f"{row.chars_per_s:,.0f}",
            f"{row.loss.nats_per_char:.4f}",
            f"{row.loss.bits_per_char:.4f}",
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        click.echo(
            "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
        )


if __name__ == "__main__":
    from kerasgen_cli.native_logs import run_command

    run_command(compare_command)
