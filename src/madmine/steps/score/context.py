"""What a scorer needs, picklable so that it travels to remote actors."""

from __future__ import annotations

from dataclasses import dataclass, field

from madmine.config import ModelSpec, ScoringConfig


@dataclass(frozen=True)
class ScoreContext:
    """Everything a scorer needs, picklable so that it can travel to remote actors."""

    run_id: str
    classes: tuple[str, ...]
    models: tuple[ModelSpec, ...]  # the target first, then the competitors
    versions: dict
    workspace_uri: str
    storage_options: dict
    scoring: ScoringConfig
    stored_packs: dict = field(default_factory=dict)  # model -> the packs the map store held when the run was planned

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def target(self) -> ModelSpec:
        return self.models[0]

    @property
    def competitors(self) -> tuple[ModelSpec, ...]:
        return self.models[1:]

    @property
    def input_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({m.input_size for m in self.models if m.is_network}))


def column(kind: str, model: str) -> str:
    """Name of a per-model output column, e.g. column('cp', 'fcn') -> 'cp__fcn'."""
    return f"{kind}__{model}"
