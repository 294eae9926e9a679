"""Option spelling shared by the commands: the original underscore names plus dashed aliases.

Choices and defaults come from the library's constants; the values are checked
once, by the library, whose errors name the flag (``errors.library_errors``).
"""

import click

import kerasgen

TRAIN_DEFAULTS = kerasgen.TrainConfig()  # kerasgen train's defaults, as the library has them
MODEL_DEFAULTS = kerasgen.ModelConfig  # its fields' defaults (a class: vocab_size has none)
RECURRENT = [name for name, family in kerasgen.FAMILIES.items() if family.recurrent]
CHECKPOINT = click.Choice(list(kerasgen.CHECKPOINTS))


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


def run_folder_option(fn):
    """``--save_dir``: the run folder a command reads (sample, evaluate, export, serve)."""
    return option(
        "--save_dir",
        default=TRAIN_DEFAULTS.save_dir,
        type=click.Path(file_okay=False),
        help="Run folder written by kerasgen train.",
    )(fn)


def checkpoint_option(what: str):
    """``--checkpoint best|latest``: which weights of the run ``what`` uses."""
    return option(
        "--checkpoint",
        default=kerasgen.CHECKPOINTS[0],
        type=CHECKPOINT,
        help=f"Weights to {what}: lowest validation loss (the latest when there is none yet), "
        "or the newest.",
    )


def exported_option(verb: str, why: str):
    """``--exported DIR``: a folder of ``kerasgen export --format tflite|onnx`` in place of
    the run; ``verb``: what the command does with it, ``why``: what that shows."""
    return option(
        "--exported",
        default=None,
        type=click.Path(file_okay=False),
        help=f"{verb} this folder of kerasgen export --format tflite or onnx instead of "
        f"SAVE_DIR, through its runtime ({why}).",
    )


def keep_prob_options(fn):
    """``--output_keep_prob --input_keep_prob``: recurrent dropout, as train and bench share it."""
    fn = option(
        "--input_keep_prob",
        default=MODEL_DEFAULTS.input_keep_prob,
        type=float,
        help="Keep probability of dropout on each recurrent layer's input.",
    )(fn)
    return option(
        "--output_keep_prob",
        default=MODEL_DEFAULTS.output_keep_prob,
        type=float,
        help="Keep probability of dropout on each recurrent layer's output.",
    )(fn)


def truncation_options(fn):
    """``--top_k --top_p``: which characters sampling may pick, as sample and evaluate share it."""
    fn = option(
        "--top_p",
        default=1.0,
        type=float,
        help="Sample only from the smallest set of characters with this total "
        "probability (1: off).",
    )(fn)
    return option(
        "--top_k",
        default=0,
        type=int,
        help="Sample only among the K most likely characters (0: off).",
    )(fn)


def constrain_option(default_help: str):
    """``--constrain python|python-tokens|none``: sampling kept to Python's rules (sample,
    evaluate)."""
    return option(
        "--constrain",
        default=None,
        type=click.Choice([*kerasgen.CONSTRAINTS, "none"]),
        help="python: every character drawn keeps the text the start of a module "
        "Python compiles (its grammar, and the compiler's rules on return, break, await, "
        "parameters). python-tokens: only the rules the next character decides (strings, "
        "brackets, indentation, ...): faster, looser. docs/python-code.md; "
        "character-level runs only. " + default_help,
    )


def model_shape_options(families=RECURRENT, model_help="Recurrent cell type.", transformer=False):
    """``--model --rnn_size --num_layers --seq_length --batch_size``, as train and bench
    share them; ``transformer`` adds the spelling ``--n_embd`` and says what each means
    for a transformer."""
    extra_size_spellings = ("--n_embd", "rnn_size") if transformer else ()
    size_help = "Units per recurrent layer."
    layers_help = f"Number of recurrent layers (at most {kerasgen.MAX_LAYERS})."
    length_help = "Characters per stream per step."
    if transformer:
        size_help = "Units per recurrent layer; a transformer's width (also --n_embd)."
        layers_help = "Number of recurrent layers, or transformer blocks."
        length_help = (
            "Tokens (characters at char level) per stream per step; a transformer's context length."
        )
    options = [
        option(
            "--model", default=MODEL_DEFAULTS.model, type=click.Choice(families), help=model_help
        ),
        option(
            "--rnn_size",
            *extra_size_spellings,
            default=MODEL_DEFAULTS.rnn_size,
            type=int,
            help=size_help,
        ),
        option("--num_layers", default=MODEL_DEFAULTS.num_layers, type=int, help=layers_help),
        option("--seq_length", default=TRAIN_DEFAULTS.seq_length, type=int, help=length_help),
        option(
            "--batch_size",
            default=TRAIN_DEFAULTS.batch_size,
            type=int,
            help="Parallel streams per training step.",
        ),
    ]

    def decorate(fn):
        for add in reversed(options):
            fn = add(fn)
        return fn

    return decorate
