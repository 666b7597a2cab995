"""What a fine-tuning checkpoint holds: the model as a plain state_dict, the optimizer, and the
trial's state (epochs done, its learning curve so far, where it was resumed).

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


def write(directory: str, model_state: dict, optimizer_state: dict, state: dict) -> None:
    torch.save(model_state, os.path.join(directory, MODEL))
    torch.save(optimizer_state, os.path.join(directory, OPTIMIZER))
    with open(os.path.join(directory, STATE), "w") as fh:
        json.dump(state, fh, indent=1)


def read(directory: str) -> tuple[dict, dict, dict]:
    """(model state_dict, optimizer state_dict, trial state) from a local checkpoint folder."""
    model = torch.load(os.path.join(directory, MODEL), map_location="cpu", weights_only=True)
    optimizer = torch.load(os.path.join(directory, OPTIMIZER), map_location="cpu", weights_only=True)
    with open(os.path.join(directory, STATE)) as fh:
        return model, optimizer, json.load(fh)


def dir_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"
