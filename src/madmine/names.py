"""The paper's names of the sets madmine builds: T(0) the held-out set, T(i) drawn from M(i-1),
S(i) the images round i-1 labelled, and what a model version learned from."""

from __future__ import annotations

from madmine.tables import MAD

HELD_OUT = -1  # the testset_round of T(0), the held-out set of [finetune] t0_images / t0_labels


def testset_index(round_: int) -> int:
    """The paper's i of T(i): 0 for the held-out set, R + 1 for the set drawn from M of round R."""
    return 0 if round_ == HELD_OUT else round_ + 1


def testset_name(round_: int) -> str:
    """T(0) for the held-out set of the training domain, T(R+1) for the set drawn in round R (the paper's names)."""
    return f"T({testset_index(round_)})"


def s_name(round_: int) -> str:
    """S(R+1): the images round R fine-tunes on (S(0) is the original training set)."""
    return f"S({round_ + 1})"


def trained_on(round_: int | None, selection: str | None) -> str:
    """What a model version learned from: S(0), plus S(1)..S(R+1) of its strategy for round R's version."""
    if round_ is None:
        return "S(0)"
    parts = " + ".join(f"S({i})" for i in range(round_ + 2))
    return f"{parts} ({selection or MAD})"
