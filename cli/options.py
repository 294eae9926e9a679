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


class Duration(click.ParamType):
    """A wall-clock duration: ``600``, ``600s``, ``10m`` or ``1h``, as seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        from kerasgen.train import parse_duration

        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
