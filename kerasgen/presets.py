"""Named training settings shipped with kerasgen: ``kerasgen train --preset NAME``.

A preset is a JSON file ``kerasgen/presets/NAME.json`` holding one object of
options named as ``kerasgen train``'s flags, with values as ``kerasgen.train``
takes them (``{"rnn_size": 256, "time_budget": "10m"}``). The files are
package data, so an installed kerasgen has them; the list of names is read
from the folder, never written down twice.

Where a setting comes from, first match wins: flags typed on the command line
(arguments to ``kerasgen.train``), the preset, what the ``--init_from`` run
recorded, the defaults (``settings.resolve_options`` applies the order).
"""

from __future__ import annotations

import json
from importlib import resources

from kerasgen.errors import ParameterError

SUFFIX = ".json"


def _folder():
    return resources.files("kerasgen").joinpath("presets")


def preset_names() -> list[str]:
    """The shipped presets, sorted."""
    return sorted(
        entry.name[: -len(SUFFIX)]
        for entry in _folder().iterdir()
        if entry.name.endswith(SUFFIX) and entry.is_file()
    )


def load_preset(name: str) -> dict:
    """The options of preset ``name``; ParameterError naming the presets for an unknown one."""
    names = preset_names()
    if name not in names:
        raise ParameterError("preset", f"{name!r} is unknown; choose one of {', '.join(names)}")
    text = _folder().joinpath(name + SUFFIX).read_text(encoding="utf-8")
    options = json.loads(text)
    # Shipped files, checked by the tests; a damaged install still gets a clear message.
    if not isinstance(options, dict) or "preset" in options:
        raise ValueError(
            f"preset {name} is not a JSON object of kerasgen train options; reinstall kerasgen"
        )
    return options


def as_flags(options: dict) -> str:
    """The options as ``kerasgen train`` flags: ``--rnn_size 256 --lr_schedule cosine``."""
    words = []
    for key, value in options.items():
        if value is True:
            words.append(f"--{key}")
        elif value is False:
            words.append(f"--no_{key}")
        else:
            words.append(f"--{key} {value}")
    return " ".join(words)
