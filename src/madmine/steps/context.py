"""What every step's entry point receives, whoever calls it (the command line, a round, a night,
the demo): the config, the workspace, where Ray runs, and how to show progress.

Each step module has one entry point, `run(ctx, params) -> result`: `params` holds what the
caller chooses for this call, each default taken from the config section the step owns
(`Params.from_config(config, **overrides)`), so no caller copies config fields one by one and
no two callers drift apart. Steps that build models resolve the config's models themselves
(madmine.models.resolve): the others never read a class map or a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from madmine.config import Config
from madmine.workspace import Workspace


def _quiet(text: str) -> None:
    """Progress nobody watches."""


@dataclass
class StepContext:
    config: Config
    ws: Workspace
    ray_address: str | None = None
    show_progress: bool = False  # progress bars on the terminal
    say: Callable[[str], None] = field(default=_quiet)  # one line of progress, for callers that print it

    @classmethod
    def of(cls, config: Config, *, ray_address: str | None = None, show_progress: bool = False,
           say: Callable[[str], None] | None = None) -> StepContext:
        return cls(config, Workspace.from_config(config), ray_address, show_progress, say or _quiet)

    def with_config(self, config: Config) -> StepContext:
        """The same context over another config of the same workspace (a newer target version, say)."""
        return dataclasses.replace(self, config=config)


def from_section(cls, section, **overrides):
    """A params dataclass: each field that `section` (a config section) also has takes the section's value,
    then every override that is not None wins."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {name: getattr(section, name) for name in names if section is not None and hasattr(section, name)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)
