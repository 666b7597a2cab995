"""Test configs: one writer of madmine.toml and one builder of model entries, for every test.

    write_config(folder, models(model("target", "target", factory=SEGNET, input_size=32),
                                model("other", "competitor", factory=DILATED, input_size=32)),
                 scoring="shard_size = 8")
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

CLASSES = ["background", "red", "green", "blue"]
# the networks test configs name (tests/support is on the path of every test and Ray worker)
SEGNET = "madmine.models.tiny:tiny_segnet"
DILATED = "madmine.models.tiny:tiny_dilated"
COLOUR = "worlds:colour_net"
SLOW_COLOUR = "worlds:slow_colour_net"


def _toml(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def model(name: str, role: str, lines: str = "", **keys) -> str:
    """One [[models]] entry: its keys as Python values, or raw TOML `lines` (for tables and odd values)."""
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items() if v is not None)
    return f'\n[[models]]\nname = "{name}"\nrole = "{role}"\n' + body + (textwrap.dedent(lines).strip() + "\n" if lines else "")


def models(*entries: str) -> str:
    return "".join(entries)


def write_config(folder: Path, models_toml: str, workspace: str = "work/", scoring: str = "", extra: str = "",
                 classes: list[str] | None = None) -> Path:
    """folder/madmine.toml: the workspace, the classes (the test worlds' four by default), the models,
    [scoring] and any further TOML (`extra`)."""
    text = f'[workspace]\nuri = "{workspace}"\n\n[classes]\nnames = {json.dumps(classes or CLASSES)}\n'
    text += textwrap.dedent(models_toml)
    text += "\n[scoring]\n" + textwrap.dedent(scoring) + "\n" + textwrap.dedent(extra)
    path = folder / "madmine.toml"
    path.write_text(text)
    return path


# a slow target (0.15 s an image: runs long enough to interrupt) and a tiny competitor
SLOW_MODELS = models(
    model("target", "target", factory=SLOW_COLOUR, input_size=32),
    model("tiny", "competitor", factory=SEGNET, input_size=32),
)
