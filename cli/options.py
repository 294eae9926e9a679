"""Option spelling shared by the commands: the original underscore names plus dashed aliases."""

import click


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
