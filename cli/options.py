"""Option spelling shared by the commands: the original underscore names plus dashed aliases."""

import click

from kerasgen.model import MAX_LAYERS

POSITIVE = click.IntRange(min=1)
RNN_FAMILIES = ["lstm", "gru", "rnn"]


def option(*spellings, **kwargs):
    """``click.option`` that also accepts ``--batch-size`` for ``--batch_size``.

    Give the flags as in char-rnn (``"--batch_size"``) and, if needed, the
    parameter name last without dashes (``"-n", "n"``).
    """
    names = list(spellings)
    for s in spellings:
        if s.startswith("--") and "_" in s:
            names.append(s.replace("_", "-"))
    return click.option(*names, show_default=True, **kwargs)


def verbose_option(fn):
    """``--verbose``: show TensorFlow's own log lines (read before Click parses; see
    ``native_logs``)."""
    return click.option(
        "--verbose",
        is_flag=True,
        expose_value=False,
        help="Show TensorFlow's own log lines (also KERASGEN_VERBOSE=1).",
    )(fn)


class Duration(click.ParamType):
    """A wall-clock duration: ``600``, ``600s``, ``10m`` or ``1h``, as seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        from kerasgen.training import parse_duration

        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


KEEP_PROB = click.FloatRange(0.0, 1.0, min_open=True)


def keep_prob_options(fn):
    """``--output_keep_prob --input_keep_prob``: recurrent dropout, as train and bench share it."""
    fn = option(
        "--input_keep_prob",
        default=1.0,
        type=KEEP_PROB,
        help="Keep probability of dropout on each recurrent layer's input.",
    )(fn)
    return option(
        "--output_keep_prob",
        default=1.0,
        type=KEEP_PROB,
        help="Keep probability of dropout on each recurrent layer's output.",
    )(fn)


def truncation_options(fn):
    """``--top_k --top_p``: which characters sampling may pick, as sample and evaluate share it."""
    fn = option(
        "--top_p",
        default=1.0,
        type=click.FloatRange(0.0, 1.0, min_open=True),
        help="Sample only from the smallest set of characters with this total "
        "probability (1: off).",
    )(fn)
    return option(
        "--top_k",
        default=0,
        type=click.IntRange(min=0),
        help="Sample only among the K most likely characters (0: off).",
    )(fn)


def constrain_option(default_help: str):
    """``--constrain python|none``: sampling kept to Python's rules (sample, evaluate)."""
    return option(
        "--constrain",
        default=None,
        type=click.Choice(["python", "none"]),
        help="python: never draw a character that breaks Python's rules where the "
        "next character decides them (strings, brackets, indentation, a ':' or "
        "'else' a line still needs, def headers, two operands in a row, try "
        "without except; docs/python-code.md); character-level runs only. " + default_help,
    )


def check_constrain(model, constrain: str | None) -> None:
    """--constrain python on a run that cannot take it is a usage error (exit 2)."""
    try:
        model.check_constrain(constrain)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--constrain") from None


def model_shape_options(
    families=RNN_FAMILIES, model_help="Recurrent cell type.", transformer=False
):
    """``--model --rnn_size --num_layers --seq_length --batch_size``, as train and bench
    share them; ``transformer`` adds the spelling ``--n_embd`` and says what each means
    for a transformer."""
    extra_size_spellings = ("--n_embd", "rnn_size") if transformer else ()
    size_help = "Units per recurrent layer."
    layers_help = "Number of recurrent layers."
    length_help = "Characters per stream per step."
    if transformer:
        size_help = "Units per recurrent layer; a transformer's width (also --n_embd)."
        layers_help = "Number of recurrent layers, or transformer blocks."
        length_help = (
            "Tokens (characters at char level) per stream per step; a transformer's context length."
        )
    options = [
        option("--model", default="lstm", type=click.Choice(families), help=model_help),
        option("--rnn_size", *extra_size_spellings, default=128, type=POSITIVE, help=size_help),
        option("--num_layers", default=2, type=click.IntRange(1, MAX_LAYERS), help=layers_help),
        option("--seq_length", default=50, type=POSITIVE, help=length_help),
        option(
            "--batch_size", default=50, type=POSITIVE, help="Parallel streams per training step."
        ),
    ]

    def decorate(fn):
        for add in reversed(options):
            fn = add(fn)
        return fn

    return decorate
