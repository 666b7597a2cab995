"""A rated round's small workspace and the rating app serving it on 127.0.0.1, stopped with the test."""

from __future__ import annotations

import pytest

import rating_world
from madmine.steps.rating.app import create_app
from madmine.steps.rating.roundset import load_round
from madmine.steps.rating.server import BackgroundServer


@pytest.fixture
def world(tmp_path):
    return rating_world.build(tmp_path / "w")


@pytest.fixture
def server(world):
    app = create_app(world.ws, world.config, load_round(world.ws, world.config, 0))
    with BackgroundServer(app) as running:
        yield running
