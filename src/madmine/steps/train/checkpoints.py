"""What a fine-tuning checkpoint holds: the model as a plain state_dict, the optimizer, the
trial's state (epochs done, its learning curve so far, where it was resumed, which validated
epoch is the best so far and its per-image figures) and the best epoch's weights (best.pt,
only when the best is not the checkpoint's own epoch).

The curve travels inside the checkpoint, so a run restored from epoch k keeps epochs 1..k
exactly once and appends the rest: the curve of a resumed run is the curve of an
uninterrupted one, plus the mark of where it resumed.
"""

from __future__ import annotations

import json
import os

import torch

MODEL = "model.pt"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
BEST = "best.pt"


def write(directory: str, model_state: dict, optimizer_state: dict, state: dict, best_state: dict | None = None) -> None:
    torch.save(model_state, os.path.join(directory, MODEL))
    torch.save(optimizer_state, os.path.join(directory, OPTIMIZER))
    if best_state is not None:
        torch.save(best_state, os.path.join(directory, BEST))
    with open(os.path.join(directory, STATE), "w") as fh:
        json.dump(state, fh)


def read(directory: str) -> tuple[dict, dict, dict, dict | None]:
    """(model state_dict, optimizer state_dict, trial state, the best epoch's state_dict or None when the
    best is this checkpoint's own epoch) from a local checkpoint folder."""
    model = torch.load(os.path.join(directory, MODEL), map_location="cpu", weights_only=True)
    optimizer = torch.load(os.path.join(directory, OPTIMIZER), map_location="cpu", weights_only=True)
    best_path = os.path.join(directory, BEST)
    best = torch.load(best_path, map_location="cpu", weights_only=True) if os.path.exists(best_path) else None
    with open(os.path.join(directory, STATE)) as fh:
        return model, optimizer, json.load(fh), best


def kept_weights(state: dict) -> str:
    """The file of a final checkpoint that holds the kept (best) epoch's weights."""
    return MODEL if state["best"]["epoch"] == state["epoch"] else BEST


def dir_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"
