"""``kerasgen bench``: measured training and sampling speed of one model shape."""

from __future__ import annotations

import json

import click

import kerasgen
from kerasgen_cli.errors import library_errors
from kerasgen_cli.options import (
    keep_prob_options,
    model_shape_options,
    option,
    verbose_option,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_shape_options()
@keep_prob_options
@option("--vocab_size", default=65, type=int, help="Vocabulary size (tiny Shakespeare: 65).")
@option(
    "--seconds",
    default=10.0,
    type=float,
    help="Timed seconds per measurement (training, 1-stream and N-stream sampling), "
    "after a warm-up.",
)
@option(
    "--sample_streams",
    default=64,
    type=int,
    help="Streams generated together for the batched sampling figure.",
)
@click.option(
    "--fused/--no_fused",
    " /--no-fused",
    "fused",
    default=True,
    show_default=True,
    help="Measure the fused fast path, or the Keras layers.",
)
@click.option(
    "--jit_compile/--no_jit_compile",
    "--jit-compile/--no-jit-compile",
    "jit_compile",
    default=False,
    show_default=True,
    help="XLA-compile the training step.",
)
@option(
    "--precision",
    type=click.Choice(list(kerasgen.PRECISIONS)),
    default="auto",
    help="Measure the training step with its recurrent products in float32 or bfloat16 "
    "(weights, optimizer, state and loss stay float32); auto: bfloat16 on a CPU with "
    "bfloat16 instructions (AVX512-BF16, AMX), float32 elsewhere.",
)
@option(
    "--profile",
    is_flag=True,
    default=False,
    help="Also time the parts of one training step (input, forward and backward through "
    "the recurrence and the output layer, weight gradients, optimizer) and the weight "
    "gradients as one GEMM in float32 and bfloat16.",
)
@option(
    "--json",
    "as_json",
    is_flag=True,
    default=False,
    help="Print one JSON object instead of a table.",
)
@verbose_option
@library_errors
def bench_command(as_json, **options):
    """Measure training chars/s, sampling chars/s (1 and N streams) and peak memory.

    Figures are medians over timed windows of synthetic text; --json prints
    train_chars_per_s, sample_chars_per_s, sample_batched_chars_per_s,
    prime_chars_per_s (reading a long prime), peak_rss_mb, gflops (achieved
    training GFLOP/s), precision (of the recurrent products), gemm_peak_gflops and
    gemm_peak_bf16_gflops (this CPU's float32 and bfloat16 GEMM, measured in the same
    run) and peak_share among others; with --profile, profile_ms.
    """
    kerasgen.configure_cpu_threads()
    result = kerasgen.run_bench(kerasgen.BenchConfig(**options))
    if as_json:
        click.echo(json.dumps(result))
        return
    streams = result["sample_streams"]
    bf16 = result["precision"] == "bfloat16"
    peak = result["gemm_peak_bf16_gflops" if bf16 else "gemm_peak_gflops"]
    rows = [
        (
            "training",
            f"{result['train_chars_per_s']:,.0f} chars/s",
            f"{result['gflops']:.1f} GFLOP/s at {result['train_flop_per_char'] / 1e6:.2f} "
            f"MFLOP/char, {result['precision']}: {result['peak_share']:.0%} of this CPU's "
            f"{peak:.0f} GFLOP/s {result['precision']} GEMM",
        ),
        ("sampling, 1 stream", f"{result['sample_chars_per_s']:,.0f} chars/s", ""),
        (
            f"sampling, {streams} streams",
            f"{result['sample_batched_chars_per_s']:,.0f} chars/s",
            "all streams together",
        ),
        (
            "reading a prime",
            f"{result['prime_chars_per_s']:,.0f} chars/s",
            "a 20,000-character prime, 1 stream",
        ),
        ("peak RSS", f"{result['peak_rss_mb']:,.0f} MB", "whole process"),
        (
            "warm-up",
            f"{result['train_warmup_s']:.1f} s train, {result['sample_warmup_s']:.1f} s sample",
            "compilation included",
        ),
    ]
    click.echo(
        f"{options['model']} {options['num_layers']}x{options['rnn_size']}, batch "
        f"{options['batch_size']}, seq {options['seq_length']}, "
        f"{result['params']:,} parameters"
        f"{'' if options['fused'] else ', Keras layers (--no_fused)'}"
    )
    for name, value, note in rows:
        click.echo(f"  {name:<22} {value:>28}  {note}".rstrip())
    if "profile_ms" in result:
        parts = kerasgen.profile_rows(result["profile_ms"])
        total = result["profile_ms"]["step"]
        click.echo("one training step, ms (parts timed alone; recurrence by difference):")
        for name, ms in parts:
            click.echo(f"  {name:<38} {ms:8.2f}  {ms / total:6.1%}")


if __name__ == "__main__":
    from kerasgen_cli.native_logs import run_command

    run_command(bench_command)
