"""``kerasgen evaluate``: held-out loss of a run, and optionally how much of its Python parses."""

from __future__ import annotations

import json

import click

from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option("--save_dir", default="save", type=click.Path(file_okay=False),
        help="Run folder written by kerasgen train.")
@option("--data_dir", default=None, type=click.Path(file_okay=False),
        help="Score the validation split of DATA_DIR/input.txt, cut as training cut it "
             "[default: the run's training data].")
@option("--text", "text_file", default=None, type=click.Path(exists=True, dir_okay=False),
        help="Score this whole file instead of a validation split.")
@option("--encoding", default=None,
        help="Encoding of the text [default: the run's training encoding].")
@option("--checkpoint", default="best", type=click.Choice(["best", "latest"]),
        help="Weights to use: lowest validation loss, or the newest.")
@option("--streams", default=32, type=click.IntRange(min=1),
        help="Contiguous streams the text is cut into and scored in parallel; every "
             "character is scored once whatever the number.")
@option("--python_syntax", default=0, type=click.IntRange(min=0),
        help="Also generate this many samples and report the fraction of their complete "
             "top-level blocks that ast.parse accepts (0: off).")
@option("-n", "n", default=2000, type=click.IntRange(min=1),
        help="Characters per sample for --python_syntax.")
@option("--temperature", default=1.0, type=click.FloatRange(0.0, min_open=True),
        help="Sampling temperature for --python_syntax.")
@option("--seed", default=0, type=click.IntRange(min=0),
        help="Random seed for --python_syntax samples.")
@option("--json", "as_json", is_flag=True, default=False,
        help="Print one JSON object instead of a table.")
@library_errors
def evaluate_command(save_dir, data_dir, text_file, encoding, checkpoint, streams,
                     python_syntax, n, temperature, seed, as_json):
    """Score the model in SAVE_DIR on held-out text (nats and bits per character).

    Every next character (token, at word and bpe levels) of the text is scored
    exactly once (no subsampling); a transformer reads half-overlapping windows
    of its context. Word- and bpe-level runs also report nats per token.
    With --python_syntax N, N samples are generated (each starting at a line
    start) and cut into top-level blocks at column-0 lines that begin a new
    statement: not a comment, not else/elif/except/finally or a closing
    bracket, not the def/class after a decorator, and not while the block so
    far is unfinished (open bracket or triple-quoted string, trailing
    backslash, missing body). Text before the first block and the last,
    cut-off block of each sample are not counted.
    """
    import kerasgen
    from kerasgen.evaluate import evaluate_model, sample_syntax
    from kerasgen.model import configure_cpu_threads
    from kerasgen.sampling import SamplingOptions

    configure_cpu_threads()
    if data_dir is not None and text_file is not None:
        raise click.UsageError("pass --data_dir or --text, not both")
    model = kerasgen.load(save_dir, checkpoint)
    checkpoint = model.checkpoint
    loss = evaluate_model(model, data_dir=data_dir, text_file=text_file, encoding=encoding,
                          streams=streams)
    syntax = None
    if python_syntax:
        syntax = sample_syntax(model, python_syntax, n,
                               SamplingOptions(temperature=temperature, seed=seed))

    result = {"save_dir": save_dir, "checkpoint": checkpoint, "step": loss.step,
              "text": loss.source, "targets": loss.targets, "streams": loss.streams,
              "level": loss.level, "chars": loss.chars, "nats_per_token": loss.nats_per_token,
              "unknown_targets": loss.unknown,
              "nats_per_char": loss.nats_per_char, "bits_per_char": loss.bits_per_char}
    start = loss.start
    result.update(cold_nats_per_char=start and start.cold_nats_per_char,
                  warm_nats_per_char=start and start.warm_nats_per_char,
                  start_penalty=start and start.ratio, start_lines=start and start.lines)
    if syntax is not None:
        result["python_syntax"] = {"ok": syntax.ok, "total": syntax.total, "rate": syntax.rate,
                                   "samples": syntax.samples, "chars": syntax.chars,
                                   "temperature": temperature, "seed": seed}
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    step = "" if loss.step is None else f", step {loss.step:,}"
    rows = [("run", f"{save_dir} ({checkpoint} checkpoint{step})"),
            ("text", loss.source),
            ("targets", f"{loss.targets:,} characters" if loss.level == "char"
             else f"{loss.targets:,} tokens ({loss.chars:,} characters)"),
            ("loss", f"{loss.nats_per_char:.4f} nats/char  {loss.bits_per_char:.4f} bits/char")]
    if loss.level == "word":
        rows.append(("loss per token", f"{loss.nats_per_token:.4f} nats/token ({loss.unknown:,} "
                                       "<unk> targets; per char adds their spelling)"))
    elif loss.level != "char":
        rows.append(("loss per token", f"{loss.nats_per_token:.4f} nats/token"))
    if start is not None:
        rows.append(("start penalty", f"{start.ratio:.3f}: first {start.chars} characters of "
                                      f"{start.lines} lines, {start.cold_nats_per_char:.4f} "
                                      f"nats/char from where sample starts, "
                                      f"{start.warm_nats_per_char:.4f} after the text before"))
    if syntax is not None:
        rate = "n/a" if syntax.rate is None else f"{syntax.rate:.1%}"
        rows.append(("python syntax", f"{rate}: {syntax.ok}/{syntax.total} top-level blocks "
                                      f"parse ({syntax.samples} samples of {syntax.chars:,} "
                                      f"chars, temperature {temperature:g})"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    evaluate_command()
