"""Where a round's fine-tuning state lives in the workspace, as Ray Train and Tune want it.

    finetune/round-<R>-<strategy>/plan.json          what is being trained (fingerprinted)
    finetune/round-<R>-<strategy>/tune/              the Ray Tune experiment (restorable)
    finetune/round-<R>-<strategy>/trials/lr-<lr>/    one Ray Train run per learning rate: epoch-NNNN/ checkpoints
    finetune/round-<R>-<strategy>/done.json          written last: the round's result

<strategy> is whose S is trained on: mad, or a baseline's (`--selection entropy`).

Ray takes a plain path plus a pyarrow filesystem; for s3:// that is the workspace's own
fsspec filesystem wrapped for pyarrow, so Ray reaches the same endpoint with the same
credentials as every other table.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from pyarrow.fs import FSSpecHandler, PyFileSystem

from madmine.completion import Markers, finetune_markers
from madmine.workspace import Workspace


@dataclass(frozen=True)
class RoundStorage:
    workspace_uri: str
    storage_options: dict
    round: int
    selection: str = "mad"  # the strategy whose S is trained on

    @property
    def folder(self) -> str:
        return f"round-{self.round}-{self.selection}"

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.workspace_uri, dict(self.storage_options))

    @property
    def root(self) -> str:
        """The round's folder as Ray sees it: an absolute local path, or bucket/key with `pyarrow_fs`."""
        return self.workspace.path("finetune", self.folder)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def plan(self) -> str:
        return self.path("plan.json")

    @property
    def markers(self) -> Markers:
        """The round's completion marker: finetune/round-<R>-<strategy>/done.json, holding its result."""
        return finetune_markers(self.workspace, self.folder)

    @property
    def tune(self) -> str:
        return self.path("tune")

    @property
    def trials(self) -> str:
        return self.path("trials")

    def checkpoint(self, trial: str, dir_name: str) -> str:
        return self.path("trials", trial, dir_name)

    def pyarrow_fs(self):
        """None for a local workspace (Ray uses the path as is), else pyarrow over the workspace's fsspec."""
        ws = self.workspace
        if ws.is_local:
            return None
        return PyFileSystem(FSSpecHandler(ws.fs))
