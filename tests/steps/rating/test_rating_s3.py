"""Ratings on an s3:// workspace (moto's real S3 endpoint on 127.0.0.1): each vote is one
object, PUT before the server answers, and the table is built from them."""

from __future__ import annotations

import httpx
import pytest
from moto.server import ThreadedMotoServer

import rating_world
from madmine import tables
from madmine.steps.rating import selection, store
from madmine.steps.rating.app import create_app
from madmine.steps.rating.roundset import load_round
from madmine.steps.rating.server import BackgroundServer
from madmine.steps.rating.tokens import add_rater


@pytest.fixture
def s3_world(tmp_path, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        import s3fs

        s3fs.S3FileSystem(key="test", secret="test", client_kwargs={"endpoint_url": endpoint}).mkdir("ratings-bucket")
        extra = f'[storage]\nendpoint_url = "{endpoint}"\nkey = "test"\nsecret = "test"\n'
        yield rating_world.build(tmp_path / "w", extra_toml=extra, workspace_uri="s3://ratings-bucket/ws")
    finally:
        server.stop()


def test_votes_on_s3_are_stored_before_the_answer(s3_world):
    world = s3_world
    assert not world.ws.is_local
    token = add_rater(world.ws, "alice")
    app = create_app(world.ws, world.config, load_round(world.ws, world.config, 0))
    with BackgroundServer(app) as server, \
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as client:
        k, voted = 0, {}
        for score in (2, None, 4):
            item = client.get(f"/api/items/{k}").json()
            body = {"image_id": item["image_id"], "out_of_domain": True} if score is None else {
                "image_id": item["image_id"], "score": score}
            answer = client.post("/api/ratings", json=body)
            assert answer.status_code == 200
            voted[item["image_id"]] = score
            assert {e["image_id"]: e["score"] for e in store.load_events(world.ws, 0, "alice")} == voted
            k = answer.json()["next"]
        image = client.get(f"/api/images/{item['image_id']}")
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    table = tables.RATINGS.read(world.ws)
    assert {r["image_id"]: r["score"] for r in table.to_pylist()} == voted
    # one object per vote where docs/rating.md says, under the workspace root (not the root twice)
    assert len(world.ws.listdir(world.ws.path("rating", "events", "round-0", "alice"))) == 3
    assert world.ws.listdir(world.ws.path("ratings-bucket")) == []
    chosen = selection.select(store.latest(store.load_events(world.ws, 0)), 0, load_round(world.ws, world.config, 0).uris,
                              n4=5, min_raters=1)
    assert [r["mos"] for r in chosen.table.to_pylist()] == [2.0, 4.0]
